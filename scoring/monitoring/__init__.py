"""Daily model health: drift, live performance, calibration, data freshness, alerts.

:func:`scoring.monitoring.run.run_monitor` writes one ``monitor_report`` row per run (a rerun at
the same data clock and champion replaces that clock's row). What it measures:

* **Drift (population stability).** Cohorts, not raw score rows, are compared so that the mix of
  lead ages in a day's rescoring cannot fake a drift: a *cohort* is every lead created in a
  window, seen at the same age (:data:`COHORT_AGE_DAYS` after creation: early, so that a change
  shows within days; reference and live cohorts are seen at that age alike) and scored by the
  champion. The *reference* cohort is the champion's own test period
  (the last part of its time-ordered training split, out of sample); the *live* cohort is the
  leads created in the :data:`LIVE_WINDOW_DAYS` that ended ``COHORT_AGE_DAYS`` ago (widened by
  as much again, up to :data:`MAX_LIVE_WINDOW_DAYS`, until it holds :data:`MIN_PSI_ROWS` leads).
  The PSI of the
  score, of the champion's most important features (mean absolute contribution on the reference)
  and of the lead-mix features (:data:`MIX_FEATURES`: who the leads are) is computed on the
  reference's decile bins. Above ``psi_warn``: warn; above ``psi_alert``: alert -- for a feature
  only when the score distribution moved too (above ``psi_warn``) or when
  :data:`BROAD_SHIFT_FEATURES` watched features are above ``psi_alert`` at once (a new lead mix);
  a single feature drift the scores do not feel is a warning (:func:`drift_alerts`).
* **The reference is stored with the model** (``model_version.params["monitor_reference"]``: bins,
  shares, importance, baseline AUC). The retrainer stores it when it trains; for a model trained
  elsewhere it is computed from the training window's leads on the first run and stored then.
* **Live performance**, on leads whose horizon has elapsed since they were scored: the score each
  lead had at ``COHORT_AGE_DAYS`` (LeadScore history, whichever model made it) against
  "converted within the horizon after that score". AUC, conversion by tier, ECE, observed vs
  predicted by score band. The AUC is compared with the baseline AUC of the model that made most
  of those scores on its reference cohort; a drop above ``auc_drop_alert`` alerts when it is
  also beyond sampling noise (one-sided 99 %, Hanley-McNeil standard errors of both), else warns.
* **Feature importance change** between the champion and the version it replaced.
* **Freshness**: the last succeeded ``sync_run`` per connection against ``freshness_hours``;
  failed outbox writes.

Alerts go to the log (WARNING), to ``monitor_report.alerts``/``status`` and, when configured, to
a webhook (JSON POST; failures are logged, never raised).

One module per measure: ``clock`` (the data's clock), ``cohorts`` and ``elapsed`` (which leads,
seen when), ``distributions`` and ``drift`` (PSI), ``reference_cohort`` (what a model is measured
against), ``tier_conversion``, ``accuracy`` (AUC, calibration), ``freshness`` (syncs, writes),
``shadow_compare``, ``status`` and ``stats`` (shared vocabulary and noise bounds), ``run`` (the
run itself). ``scoring.monitor`` re-exports the names the rest of the code uses.
"""

