-- Movement ingestion: 1000-sample uploads, each thread for its own device, new timestamps
-- every request. Devices come from $BENCH_DEVICES ("token child_id device_id" per line);
-- timestamps start at $BENCH_FIRST_TS (a second run's past the first's).
local devices = {}
local thread_count = 0

function setup(thread)
  thread:set("slot", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  for line in io.lines(os.getenv("BENCH_DEVICES")) do
    devices[#devices + 1] = line
  end
  local token, child, device = devices[slot + 1]:match("(%S+) (%S+) (%S+)")
  auth = "Bearer " .. token
  prefix = '{"real_user_id":' .. child .. ',"device_id":' .. device .. ',"movement_data":['
  sequence = 0
  size = tonumber(os.getenv("BENCH_BATCH") or "1000")
  first = tonumber(os.getenv("BENCH_FIRST_TS"))
end

function request()
  local base = first + sequence * size
  sequence = sequence + 1
  local parts = {}
  for i = 0, size - 1 do
    parts[#parts + 1] = '{"val":' .. (i % 100) .. ',"timestamp":' .. (base + i) .. '}'
  end
  local body = prefix .. table.concat(parts, ",") .. "]}"
  return wrk.format("POST", "/api/v1/lux/device/movement",
                    { ["Authorization"] = auth, ["Content-Type"] = "application/json" }, body)
end
