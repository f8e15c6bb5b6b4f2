"""The multi-user endpoint (MEP): one endpoint that starts per-user endpoints on demand.

``config`` (the administrator's ``config.yaml``), ``mapping`` (identity -> local account),
``accounts`` (who may run), ``template`` (the per-user config), ``audit`` (the decision
log), ``spawner`` (start/poll/stop one user endpoint), ``commands`` (what the service may
ask), ``admission`` (the checks before a start), ``manager`` (the MEP process), ``user``
(the user endpoint's own start-up).
"""
