-- POST the body in BENCH_BODY_FILE; with BENCH_UNIQUE=1 every request gets a fresh command id and key.
local body_file = os.getenv("BENCH_BODY_FILE")
local unique = os.getenv("BENCH_UNIQUE") == "1"
local f = assert(io.open(body_file, "r"))
local template = f:read("*a")
f:close()
local token = os.getenv("BENCH_TOKEN") or "test_token_123"
local counter = 0
-- thread_id is a global: setup() sets it in each thread's own Lua state (a local here would hide it).
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + (thread_id or 0) * 7919)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  if not unique then
    return wrk.format(nil, nil, nil, template)
  end
  counter = counter + 1
  local id = string.format("b%d-%d-%d-%d", os.time(), thread_id or 0, counter, math.random(1, 1e9))
  local body = template:gsub("__ID__", id)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"duration_us\": %d, \"non2xx\": %d, \"errors\": %d, \"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d}\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
