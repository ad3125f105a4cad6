"""The wire protocol between the node agent and the runtime shim, defined once.

Standard library only and no imports at all: this file is mounted into every function container
beside the shim (`cumulus_runtime.py` loads it from its own folder), and the node agent imports it
as `node_agent.shim.cumulus_wire`, so both sides read the same names.

The shim serves HTTP/1.1 with keep-alive on a unix socket:
  POST /invoke   body = the event as JSON; headers REQUEST_ID_HEADER, DEADLINE_HEADER (ms left)
  GET  /healthz  200 once the handler module is imported (or failed to import)
The answer to /invoke is always 200 with a Content-Length; the outcome is in headers and the body
holds the captured stdout/stderr (LOG_BYTES_HEADER bytes) followed by the result or error JSON.
"""

SOCKET_DIR = "/run/fn"  # bind-mounted from the node; the agent connects to SOCKET_NAME in it
SOCKET_NAME = "fn.sock"
GATE_NAME = ".gate"  # in SOCKET_DIR: written by the node once a networked container's rules are in
GATE_WAIT_S = 30.0  # how long a shim waits for it before it gives up
INVOKE_PATH = "/invoke"

# The node's services for one instance (`context.services`): the agent listens on SERVICES_NAME in
# SOCKET_DIR, one socket per instance, so whoever connects is that instance (and its tenant):
#   POST MAIL_PATH  {"to", "subject", "body", "cc"?, "bcc"?, "reply_to"?, "html"?}
#                   202 {"message_id"}; else an error {"error": {"type", "message"}}
SERVICES_NAME = "services.sock"
MAIL_PATH = "/v1/mail"
MAX_SERVICE_REQUEST_BYTES = 512 * 1024  # of one request's body; the agent refuses a longer one
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # of `context.services.log`

# Request headers (agent -> shim)
REQUEST_ID_HEADER = "X-Request-Id"
DEADLINE_HEADER = "X-Deadline-Ms"

# Answer headers (shim -> agent)
OUTCOME_HEADER = "X-Cumulus-Outcome"
LOG_BYTES_HEADER = "X-Cumulus-Log-Bytes"
DURATION_HEADER = "X-Cumulus-Duration-Us"

# Bounds of an answer: what a call may print (UTF-8 bytes kept, the rest dropped) and return (as on
# Lambda). The agent refuses a longer answer without reading it, whatever the shim does.
MAX_LOG_BYTES = 256 * 1024
MAX_RESULT_BYTES = 6 * 1024 * 1024
MAX_ANSWER_BYTES = MAX_LOG_BYTES + MAX_RESULT_BYTES + 64 * 1024  # with room for an error's JSON

# Outcomes the shim reports
OK = "ok"
HANDLER_ERROR = "HandlerError"
NOT_SERIALIZABLE = "ResultNotSerializable"
INVALID_EVENT = "InvalidEvent"
INIT_ERROR = "FunctionInitError"
RESPONSE_TOO_LARGE = "ResponseTooLarge"
SHIM_OUTCOMES = (OK, HANDLER_ERROR, NOT_SERIALIZABLE, INVALID_EVENT, INIT_ERROR, RESPONSE_TOO_LARGE)
