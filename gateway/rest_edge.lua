-- devicehub REST edge: adapts transcoded gRPC responses to the documented REST contract.
--
-- Runs before the gRPC-JSON transcoder. Native gRPC requests (content-type
-- application/grpc*) are left completely alone. For REST requests:
--   * every error (>= 400, from the gRPC server, the transcoder, the router or an
--     unknown path) gets the documented body:
--       /api/device/...  {"status":"error","message":"...","code":"REASON"}
--       anything else    {"detail":"..."}
--     The server sends the reason and the REST status in the trailers
--     devicehub-error-reason / devicehub-http-status (see interceptors.py);
--   * the request carries devicehub-rest-call: 1 to the server, which then marks list
--     responses: one marked with devicehub-rest-array becomes a bare JSON array;
--   * a response marked with devicehub-rest-body gets that literal JSON as its body;
--   * a successful DELETE becomes 204 with an empty body;
--   * the earlier devlog body, a bare JSON array, is wrapped as {"log_arrays": [...]}
--     so both documented shapes reach DevlogService.UploadDevlogs.

local REST = "devicehub.rest"
local LEGACY_ARRAY_PATHS = { ["/api/v1/lux/device/devlog"] = "log_arrays" }

local DEFAULT_MESSAGES = {
  [400] = "Bad request",
  [401] = "Could not validate credentials",
  [403] = "Permission denied",
  [404] = "Resource not found",
  [409] = "Conflict",
  [429] = "Too many requests",
  [500] = "Internal server error. Please try again later.",
  [501] = "Not implemented",
  [503] = "Service temporarily unavailable. Please try again later.",
  [504] = "Upstream timed out. Please try again later.",
}

local DEFAULT_REASONS = {
  [400] = "MALFORMED_REQUEST",
  [401] = "UNAUTHENTICATED",
  [403] = "PERMISSION_DENIED",
  [404] = "ROUTE_NOT_FOUND",
  [500] = "INTERNAL",
  [503] = "SERVICE_UNAVAILABLE",
  [504] = "SERVICE_UNAVAILABLE",
}

local function percent_decode(text)
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

local JSON_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                       ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(text)
  return '"' .. text:gsub('[%c"\\]', function(c)
    return JSON_ESCAPES[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function error_body(style, message, reason)
  if style == "status" then
    return '{"status":"error","message":' .. json_string(message) ..
           ',"code":' .. json_string(reason) .. '}'
  end
  return '{"detail":' .. json_string(message) .. '}'
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local content_type = headers:get("content-type") or ""
  if content_type:sub(1, 16) == "application/grpc" then
    return
  end
  local path = headers:get(":path") or ""
  local style = "detail"
  if path:sub(1, 12) == "/api/device/" or path == "/api/device" then
    style = "status"
  end
  local method = headers:get(":method") or ""
  -- Tells the server the call is transcoded REST: only then does it mark list responses.
  headers:replace("devicehub-rest-call", "1")
  local meta = request_handle:streamInfo():dynamicMetadata()
  meta:set(REST, "style", style)
  meta:set(REST, "method", method)

  local bare_path = path:gsub("%?.*$", ""):gsub("/$", "")
  local array_field = LEGACY_ARRAY_PATHS[bare_path]
  if method == "POST" and array_field ~= nil then
    local body = request_handle:body()
    if body ~= nil and body:length() > 0 then
      local text = body:getBytes(0, body:length())
      if text:match("^%s*%[") then
        body:setBytes('{"' .. array_field .. '":' .. text .. '}')
      end
    end
  end
end

-- Transcoder replies to unparsable JSON are text/plain; name the problem.
local function malformed_message(body_text)
  local first_line = (body_text or ""):match("^[^\n]*") or ""
  if first_line == "" then
    return "Malformed request"
  end
  return "Malformed request: " .. first_line
end

function envoy_on_response(response_handle)
  local rest = response_handle:streamInfo():dynamicMetadata():get(REST)
  if rest == nil then
    return
  end
  local headers = response_handle:headers()
  local status = tonumber(headers:get(":status")) or 500
  local grpc_status = headers:get("grpc-status")
  local array_field = headers:get("devicehub-rest-array")
  local literal_body = headers:get("devicehub-rest-body")

  if status >= 400 or (grpc_status ~= nil and grpc_status ~= "0") then
    local http_status = tonumber(headers:get("devicehub-http-status") or "") or status
    if http_status < 400 then http_status = 500 end
    local reason = headers:get("devicehub-error-reason") or DEFAULT_REASONS[http_status] or "INTERNAL"
    local grpc_message = headers:get("grpc-message")
    local from_server = headers:get("devicehub-error-reason") ~= nil
    local body = response_handle:body(true)
    local message
    if from_server and grpc_message ~= nil then
      message = percent_decode(grpc_message)
    elseif http_status == 400 and grpc_status == nil then
      message = malformed_message(body:getBytes(0, body:length()))
    else
      message = DEFAULT_MESSAGES[http_status] or "Request failed"
    end
    body:setBytes(error_body(rest["style"], message, reason))
    headers = response_handle:headers()
    headers:replace(":status", tostring(http_status))
    headers:replace("content-type", "application/json")
    for _, name in ipairs({"grpc-status", "grpc-message", "grpc-status-details-bin",
                           "devicehub-error-reason", "devicehub-http-status",
                           "devicehub-rest-array", "devicehub-rest-body"}) do
      headers:remove(name)
    end
    return
  end

  if rest["method"] == "DELETE" then
    local body = response_handle:body(true)
    body:setBytes("")
    headers = response_handle:headers()
    headers:replace(":status", "204")
    headers:remove("content-type")
    headers:remove("content-length")
    return
  end

  if literal_body ~= nil then
    response_handle:body(true):setBytes(literal_body)
    response_handle:headers():remove("devicehub-rest-body")
    return
  end

  if array_field ~= nil then
    local body = response_handle:body(true)
    local text = body:getBytes(0, body:length())
    local prefix = '{"' .. array_field .. '":'
    if text:sub(1, #prefix) == prefix then
      local last = text:match(".*()%]")
      if last ~= nil then
        body:setBytes(text:sub(#prefix + 1, last))
      end
    end
    headers = response_handle:headers()
    headers:remove("devicehub-rest-array")
  end
end
