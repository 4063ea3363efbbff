# Augments checks.py when setup.py compiles it. The checks the SIP core runs on every request are
# cpdef: sbc/core.py cimports them and calls them directly in C instead of looking them up by name
# and parsing their arguments; Python callers see the same functions. Their argument types are the
# .py annotations' ("request: Request" must be a Request, never None; "to_tag: str" a str).
# stamp_via stays a def: its "source_port: int" (a Python int) has no .pxd spelling, and it
# runs once per request.
from sbc.sip.headers cimport split_commas, via_view
from sbc.sip.message cimport Request, Response, make_response
from sbc.sip.uri cimport SipURI, TelURI

cpdef Response check_request(Request request, object policy, str to_tag, bint forwarding)
cpdef str semantic_problem(Request request)
