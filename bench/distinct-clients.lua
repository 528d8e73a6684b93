-- wrk script for bench/run: every request comes from a new client address (X-Forwarded-For,
-- believed because the peer is a trusted proxy), taken from the IPv6 documentation prefix
-- 2001:db8::/32. Once BENCH_KEYS requests were answered, the thread stops and writes the
-- number of addresses it sent to the file BENCH_DONE, the script's cue to end wrk.
-- Run it with one thread (-t1).
local sent = 0
local answered = 0
local max = tonumber(os.getenv("BENCH_KEYS") or "1000000")
local done_file = os.getenv("BENCH_DONE")

request = function()
  sent = sent + 1
  local xff = string.format("2001:db8::%x:%x", math.floor(sent / 65536), sent % 65536)
  return wrk.format("GET", "/bench", { ["X-Forwarded-For"] = xff })
end

response = function(status, headers, body)
  answered = answered + 1
  if answered == max then
    if done_file then
      local f = io.open(done_file, "w")
      if f then
        f:write(sent, "\n")
        f:close()
      end
    end
    wrk.thread:stop()
  end
end
