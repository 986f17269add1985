-- wrk script of bench/serve.py: POST one image per request as multipart, cycling through the bodies
-- that bench/serve.py wrote (MF_BODIES: a folder with 0.bin .. N-1.bin), with the API key in MF_KEY.
-- At the end it prints one line "MFRESULT {json}" with counts and latency percentiles (microseconds).

local dir = os.getenv("MF_BODIES")
local key = os.getenv("MF_KEY")
local boundary = os.getenv("MF_BOUNDARY")
local bodies = {}
local i = 0
while true do
  local f = io.open(dir .. "/" .. i .. ".bin", "rb")
  if f == nil then break end
  bodies[#bodies + 1] = f:read("*a")
  f:close()
  i = i + 1
end

local requests = {}
local n = 0

init = function(args)
  local headers = {
    ["Content-Type"] = "multipart/form-data; boundary=" .. boundary,
    ["Authorization"] = "Bearer " .. key,
  }
  for j, body in ipairs(bodies) do
    requests[j] = wrk.format("POST", nil, headers, body)
  end
end

request = function()
  n = n + 1
  return requests[(n % #requests) + 1]
end

done = function(summary, latency, _)
  local e = summary.errors
  local out = string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean)
  io.write("MFRESULT " .. out .. "\n")
end
