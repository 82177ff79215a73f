-- wrk script: every request is the same POST of a realistic ~1 KB OpenAI chat request.
-- BENCH_BODY names the JSON file (run.sh sets it to an absolute path). BENCH_HEADERS, when set,
-- names a file of extra "Name: value" lines, one a line: what a peer gateway is configured by
-- (Portkey's provider, host and guardrails travel in request headers).
local path = os.getenv("BENCH_BODY") or "body.json"
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-not-a-real-key"
local extra = os.getenv("BENCH_HEADERS")
if extra and extra ~= "" then
    for line in assert(io.open(extra, "rb")):lines() do
        local name, value = line:match("^([^:]+):%s*(.*)$")
        if name then
            wrk.headers[name] = value
        end
    end
end
