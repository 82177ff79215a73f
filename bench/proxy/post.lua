-- wrk script: every request is the same POST of a realistic ~1 KB OpenAI chat request.
-- BENCH_BODY names the JSON file (run.sh sets it to an absolute path).
local path = os.getenv("BENCH_BODY") or "body.json"
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-not-a-real-key"
