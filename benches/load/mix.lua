-- wrk script: one identical request mix for every variant, cycled in order per connection:
-- initialize, tools/list, tools/call with 256 B / 1 KiB / 16 KiB of arguments, HTTP egress GET and
-- POST (Host: api.github.com). MCP requests carry an Mcp-Session-Id drawn from a pool, so a
-- Portcullis variant keyed on it tracks SESSIONS live sessions. Prints one JSON line at the end.
local SESSIONS = tonumber(os.getenv("BENCH_SESSIONS") or "1000")
-- BENCH_ONLY=k (1..7) sends only the k-th request type (per-type breakdown); unset: the whole mix.
local ONLY = tonumber(os.getenv("BENCH_ONLY") or "0")
local counter = 0
local START = os.time()
local reqs = nil

-- BENCH_PAD_FILE (benches/load/run --payload text): lines `n<TAB>content`, the JSON-string content
-- of each padding length (PAD_SIZES in run); without the file the padding is x's.
local PADS = nil
local pad_file = os.getenv("BENCH_PAD_FILE")
if pad_file and pad_file ~= "" then
  PADS = {}
  for line in io.lines(pad_file) do
    local n, text = line:match("^(%d+)\t(.*)$")
    if n then PADS[tonumber(n)] = text end
  end
end

local function pad(n)
  if PADS == nil then return string.rep("x", n) end
  -- A length the file lacks would quietly measure x's: stop instead.
  return PADS[n] or error("BENCH_PAD_FILE has no padding of " .. n .. " bytes (PAD_SIZES in run)")
end

local function call(id, size)
  -- arguments object of exactly `size` bytes: {"path":"/repo/a.txt","content":"xx..","branch":"main"}
  local fixed = string.len('{"path":"/repo/a.txt","content":"","branch":"main"}')
  local args = '{"path":"/repo/a.txt","content":"' .. pad(size - fixed) .. '","branch":"main"}'
  return '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"write_file","arguments":' .. args .. '}}'
end

local bodies = {
  { "POST", "/mcp", '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1.0"}}}' },
  { "POST", "/mcp", '{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}' },
  { "POST", "/mcp", call(3, 256) },
  { "POST", "/mcp", call(4, 1024) },
  { "POST", "/mcp", call(5, 16384) },
  { "GET", "/repos/acme/widgets/pulls?state=open", nil },
  { "POST", "/repos/acme/widgets/issues", '{"title":"bench","body":"' .. pad(180) .. '"}' },
}

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
  counter = math.random(0, 1000000)
end

function request()
  counter = counter + 1
  local k = (counter % #bodies) + 1
  if ONLY > 0 then k = ONLY end
  local b = bodies[k]
  local sid
  if SESSIONS > 0 then
    sid = "bench-session-" .. (math.floor(counter / #bodies) % SESSIONS)
  else
    -- BENCH_SESSIONS=0: sessions come and go (a new id every cycle of the mix, never reused)
    sid = "rolling-" .. START .. "-" .. math.floor(counter / #bodies)
  end
  if b[2] == "/mcp" then
    return wrk.format("POST", "/mcp", {
      ["Host"] = "mcp.internal",
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["Mcp-Session-Id"] = sid,
      ["Mcp-Protocol-Version"] = "2025-06-18",
    }, b[3])
  elseif b[1] == "GET" then
    return wrk.format("GET", b[2], { ["Host"] = "api.github.com", ["X-Agent-Run"] = sid }, nil)
  else
    return wrk.format("POST", b[2], { ["Host"] = "api.github.com", ["Content-Type"] = "application/json", ["X-Agent-Run"] = sid }, b[3])
  end
end

function done(summary, latency, requests)
  io.write(string.format('{"requests":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout))
end
