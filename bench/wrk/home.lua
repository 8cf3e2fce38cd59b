-- Home screen: GET get-all-device as a random account (tokens from $BENCH_TOKENS).
local tokens = {}

function init(args)
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    tokens[#tokens + 1] = line
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local token = tokens[math.random(#tokens)]
  return wrk.format("GET", "/api/v1/lux/device/get-all-device",
                    { ["Authorization"] = "Bearer " .. token })
end
