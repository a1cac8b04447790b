-- wrk script: non-streaming 2 KB chat completion requests with a little PII in them.
local prose = "The quarterly planning notes cover onboarding, vendor reviews and the migration " ..
  "of the reporting pipeline to the new warehouse. Please summarise the risks, list owners, " ..
  "and propose a timeline that keeps the audit team informed at every milestone. "
local text = ""
while #text < 1900 do text = text .. prose end
text = text .. " Contact jane.doe@example.com or +1 415 555 0134."
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-load-test"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' .. text .. '"}]}'
