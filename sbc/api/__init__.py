"""The REST API: provisioning (carriers, customers, trunks, numbers, routes, applications, API
keys) and call control (live calls, CDRs) as a litestar application.

:func:`sbc.api.app.create_api` builds it; one module per resource holds that resource's DTOs and
controller; ``auth`` (bearer keys), ``scope`` (tenant isolation), ``errors`` (status mapping) and
``fields`` (validated input types) are shared. Imports stay in the submodules so that importing
``sbc.api.ops`` does not pull in every resource.
"""
