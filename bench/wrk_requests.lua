-- wrk script for bench/api.py: every request comes from a file, one per line:
--   METHOD <tab> PATH <tab> IDEMPOTENCY-KEY <tab> BODY      (key and body may be empty)
-- wrk -s wrk_requests.lua URL -- FILE THREADS TOKEN
-- Thread k of THREADS sends lines k, k+THREADS, k+2*THREADS, ... once each, in order; if it runs
-- out before the run's end it starts again from its first line and reports "exhausted" (for
-- payments bench/api.py then stops with an error: a repeated payment would be an idempotent
-- replay, not a write; reads and the bare app's saves may repeat).
-- Ends by printing one JSON line: requests, seconds, latency percentiles (microseconds), socket
-- errors and the count of each HTTP status.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2])
  token = args[3] or ""
  lines = {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == id then
      local method, path, key, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      table.insert(lines, {method, path, key, body})
    end
    i = i + 1
  end
  n = 0
  exhausted = 0
  statuses = {}
end

function request()
  n = n + 1
  if n > #lines then
    exhausted = 1
    n = 1
  end
  local method, path, key, body = lines[n][1], lines[n][2], lines[n][3], lines[n][4]
  local headers = {["Content-Type"] = "application/json"}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  if key ~= "" then headers["Idempotency-Key"] = key end
  if body == "" then body = nil end
  return wrk.format(method, path, headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts, out_of_lines = {}, 0
  for _, t in ipairs(threads) do
    for status, count in pairs(t:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
    out_of_lines = out_of_lines + t:get("exhausted")
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.4f, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "socket_errors": %d, "exhausted_threads": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect + e.read + e.write + e.timeout, out_of_lines,
    table.concat(parts, ", ")))
end
