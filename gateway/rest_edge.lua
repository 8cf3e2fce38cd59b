-- devicehub REST edge: adapts transcoded gRPC responses to the documented REST contract.
--
-- Runs before the gRPC-JSON transcoder. Native gRPC requests (content-type
-- application/grpc*) are left completely alone. For REST requests:
--   * every error (>= 400, from the gRPC server, the transcoder, the router or an
--     unknown path) gets the documented body:
--       /api/device/...  {"status":"error","message":"...","code":"REASON"}
--       anything else    {"detail":"..."}
--     The server sends the reason and the REST status in the trailers
--     devicehub-error-reason / devicehub-http-status (see api/errors.py);
--   * a list response becomes the bare JSON array of its repeated field, named by its
--     route's metadata (rest_array, envoy.yaml) or, where the server marks the response
--     itself, by devicehub-rest-array: the request carries devicehub-rest-call: 1 to the
--     server, which then marks list responses;
--   * a response marked with devicehub-rest-body gets that literal JSON as its body;
--   * a successful DELETE becomes 204 with an empty body;
--   * a download the server answers with a Content-Range (a Range request) becomes 206;
--   * a firmware upload's Content-Length goes to the server as devicehub-body-length;
--   * the earlier devlog body, a bare JSON array, is wrapped as {"log_arrays": [...]}
--     so both documented shapes reach DevlogService.UploadDevlogs;
--   * a body without a required boolean (REQUIRED_BOOLEANS) is refused with 400: the
--     server cannot tell it from false (proto3 bools have no presence);
--   * every error message is valid UTF-8 (invalid bytes become U+FFFD) and at most
--     MAX_MESSAGE_BYTES long, whatever the request echoed into it;
--   * a 5xx body also names the request id Envoy gave the request ("request_id"), for a
--     user to quote; it is the id of the access log and of the server's log lines;
--   * limits answer in the documented shape: a body over the transcoder's limit (or over
--     the gRPC server's receive limit once transcoded) 413 REQUEST_TOO_LARGE, a message
--     stream beyond the stream cluster's circuit breaker 503 STREAM_LIMIT_REACHED (headers
--     too large never reach this filter: envoy.yaml's local_reply_config answers 431).

-- Metadata names shared with the server, spelled as server/devicehub/api/rest_edge.py
-- spells them (tests/unit/test_rest_edge.py checks that both agree).
local REST_CALL_HEADER = "devicehub-rest-call"
local REST_ARRAY_HEADER = "devicehub-rest-array"
local REST_BODY_HEADER = "devicehub-rest-body"
local ERROR_REASON_TRAILER = "devicehub-error-reason"
local HTTP_STATUS_TRAILER = "devicehub-http-status"
local REQUEST_ID_HEADER = "x-request-id"
local CONTENT_RANGE_HEADER = "content-range"
local BODY_LENGTH_HEADER = "devicehub-body-length"

local REST = "devicehub.rest"
local LEGACY_ARRAY_PATHS = { ["/api/v1/lux/device/devlog"] = "log_arrays" }
local STREAM_PATHS = { ["/api/device/messages/stream"] = true }
local UPLOAD_PATHS = { ["/api/device/firmware/packages"] = true }
-- The REQUIRED bool fields of request bodies, by method and path (without its trailing
-- slash): left out or null, one would reach the server as false, which SetAccountAdmin
-- would apply (revoking an admin). So the body must give the key true or false.
local REQUIRED_BOOLEANS = {
  { method = "PUT", path = "^/api/v1/accounts/[^/]+/admin$", key = "is_admin" },
}
local MAX_MESSAGE_BYTES = 512
-- Request headers beyond this many bytes (Envoy's own default limit) get 431 here, in the
-- documented shape; the codec's limit (max_request_headers_kb in envoy.yaml) is higher,
-- since its own 431 cannot know the path and always has the {"detail"} shape.
local MAX_HEADER_BYTES = 60 * 1024
local STREAM_LIMIT_MESSAGE = "Too many open streams. Please try again later."

local DEFAULT_MESSAGES = {
  [400] = "Bad request",
  [401] = "Could not validate credentials",
  [403] = "Permission denied",
  [404] = "Resource not found",
  [409] = "Conflict",
  [413] = "Request body too large",
  [429] = "Too many requests",
  [431] = "Request headers too large",
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
  [413] = "REQUEST_TOO_LARGE",
  [431] = "HEADERS_TOO_LARGE",
  [500] = "INTERNAL",
  [503] = "SERVICE_UNAVAILABLE",
  [504] = "SERVICE_UNAVAILABLE",
}

local function percent_decode(text)
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- The well-formed UTF-8 of text: each byte that does not start a valid sequence (stray
-- continuation bytes, overlong forms, surrogates, beyond U+10FFFF, truncated) becomes U+FFFD.
local REPLACEMENT = "\239\191\189"

local function valid_utf8(text)
  local out = {}
  local i, n = 1, #text
  while i <= n do
    local c = text:byte(i)
    local len = 0
    if c < 0x80 then
      len = 1
    elseif c >= 0xC2 and c <= 0xDF then
      len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
    end
    local ok = len > 0 and i + len - 1 <= n
    if ok and len > 1 then
      for j = i + 1, i + len - 1 do
        local b = text:byte(j)
        if b < 0x80 or b > 0xBF then ok = false break end
      end
      local second = text:byte(i + 1)
      if ok and ((c == 0xE0 and second < 0xA0) or (c == 0xED and second > 0x9F) or
                 (c == 0xF0 and second < 0x90) or (c == 0xF4 and second > 0x8F)) then
        ok = false
      end
    end
    if ok then
      out[#out + 1] = text:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = REPLACEMENT
      i = i + 1
    end
  end
  return table.concat(out)
end

-- A message fit for the error body: bounded (requests can echo megabytes into a message)
-- and valid UTF-8 (the body must stay valid JSON).
local function safe_message(text)
  local cut = #text > MAX_MESSAGE_BYTES
  text = valid_utf8(text:sub(1, MAX_MESSAGE_BYTES))
  if #text > MAX_MESSAGE_BYTES then  -- U+FFFD takes 3 bytes: cut again, at a character
    text = text:sub(1, MAX_MESSAGE_BYTES)
    local last_lead = text:find("[\192-\255][\128-\191]*$")
    if last_lead ~= nil then
      local lead = text:byte(last_lead)
      local need = lead >= 0xF0 and 4 or lead >= 0xE0 and 3 or 2
      if #text - last_lead + 1 < need then text = text:sub(1, last_lead - 1) end
    end
    cut = true
  end
  if cut then text = text .. "..." end
  return text
end

local JSON_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                       ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(text)
  return '"' .. text:gsub('[%c"\\]', function(c)
    return JSON_ESCAPES[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- request_id: only for a 5xx (nil otherwise), as one more key after the documented ones.
local function error_body(style, message, reason, request_id)
  local extra = ""
  if request_id ~= nil then
    extra = ',"request_id":' .. json_string(safe_message(request_id))
  end
  if style == "status" then
    return '{"status":"error","message":' .. json_string(message) ..
           ',"code":' .. json_string(reason) .. extra .. '}'
  end
  return '{"detail":' .. json_string(message) .. extra .. '}'
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
  local size = 0
  for name, value in pairs(headers) do
    size = size + #name + #value
  end
  if size > MAX_HEADER_BYTES then
    request_handle:respond({[":status"] = "431", ["content-type"] = "application/json"},
      error_body(style, DEFAULT_MESSAGES[431], DEFAULT_REASONS[431]))
    return
  end
  local method = headers:get(":method") or ""
  -- Tells the server the call is transcoded REST: only then does it mark list responses.
  headers:replace(REST_CALL_HEADER, "1")
  local meta = request_handle:streamInfo():dynamicMetadata()
  meta:set(REST, "style", style)
  meta:set(REST, "method", method)
  local request_id = headers:get(REQUEST_ID_HEADER)
  if request_id ~= nil then
    meta:set(REST, "request_id", request_id)
  end

  local bare_path = path:gsub("%?.*$", ""):gsub("/$", "")
  -- The SSE stream and the WebSocket channel (the stream and WebSocket clusters' limits).
  if STREAM_PATHS[bare_path] or bare_path:match("^/api/device/messages/%d+$") then
    meta:set(REST, "stream", "1")
  end
  -- A firmware upload streams to the server, which must know the size the client sent
  -- (the transcoder drops Content-Length): a body cut short then stores nothing.
  if method == "POST" and UPLOAD_PATHS[bare_path] then
    local length = headers:get("content-length")
    if length ~= nil then
      headers:replace(BODY_LENGTH_HEADER, length)
    end
  end
  -- Reads the body: after every change of the request headers, which are sent on then.
  for _, rule in ipairs(REQUIRED_BOOLEANS) do
    if method == rule.method and bare_path:match(rule.path) then
      local body = request_handle:body()
      local text = body ~= nil and body:getBytes(0, body:length()) or ""
      local given = '"' .. rule.key .. '"%s*:%s*'
      if not (text:find(given .. "true") or text:find(given .. "false")) then
        -- The body below is final. (Objects taken before body() are out of scope now.)
        request_handle:streamInfo():dynamicMetadata():set(REST, "answered", "1")
        request_handle:respond({[":status"] = "400", ["content-type"] = "application/json"},
          error_body(style, rule.key .. " is required: true or false", "INVALID_ARGUMENT"))
        return
      end
    end
  end
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

-- Transcoder replies to unparsable JSON are text/plain; name the problem (their text
-- quotes the request, so only its start is read).
local function malformed_message(body)
  local text = body:getBytes(0, math.min(body:length(), 4 * MAX_MESSAGE_BYTES))
  local first_line = text:match("^[^\n]*") or ""
  if first_line == "" then
    return "Malformed request"
  end
  return "Malformed request: " .. first_line
end

function envoy_on_response(response_handle)
  local rest = response_handle:streamInfo():dynamicMetadata():get(REST)
  if rest == nil or rest["answered"] ~= nil then
    return
  end
  local headers = response_handle:headers()
  local status = tonumber(headers:get(":status")) or 500
  local grpc_status = headers:get("grpc-status")
  -- The route's (envoy.yaml): that of the gRPC method, the transcoder having rewritten
  -- the path by now.
  local array_field = response_handle:metadata():get("rest_array") or
                      headers:get(REST_ARRAY_HEADER)
  local literal_body = headers:get(REST_BODY_HEADER)

  if status >= 400 or (grpc_status ~= nil and grpc_status ~= "0") then
    local http_status = tonumber(headers:get(HTTP_STATUS_TRAILER) or "") or status
    if http_status < 400 then http_status = 500 end
    local reason = headers:get(ERROR_REASON_TRAILER) or DEFAULT_REASONS[http_status] or "INTERNAL"
    local grpc_message = headers:get("grpc-message")
    local from_server = headers:get(ERROR_REASON_TRAILER) ~= nil
    local overloaded = headers:get("x-envoy-overloaded") ~= nil
    -- headers is out of scope once the body is read.
    local body = response_handle:body(true)
    local message
    if from_server and grpc_message ~= nil then
      message = percent_decode(grpc_message)
    elseif grpc_status == "8" and grpc_message ~= nil and
           percent_decode(grpc_message):find("larger than max", 1, true) then
      -- The gRPC server's receive limit (the transcoded body can outgrow its JSON).
      http_status, reason = 413, DEFAULT_REASONS[413]
      message = DEFAULT_MESSAGES[413]
    elseif http_status == 503 and rest["stream"] ~= nil and overloaded then
      -- The stream cluster's circuit breaker: as many streams as allowed are open.
      reason, message = "STREAM_LIMIT_REACHED", STREAM_LIMIT_MESSAGE
    elseif http_status == 400 and grpc_status == nil then
      message = malformed_message(body)
    else
      message = DEFAULT_MESSAGES[http_status] or "Request failed"
    end
    local request_id = nil
    if http_status >= 500 then request_id = rest["request_id"] end
    body:setBytes(error_body(rest["style"], safe_message(message), reason, request_id))
    headers = response_handle:headers()
    headers:replace(":status", tostring(http_status))
    headers:replace("content-type", "application/json")
    for _, name in ipairs({"grpc-status", "grpc-message", "grpc-status-details-bin",
                           ERROR_REASON_TRAILER, HTTP_STATUS_TRAILER, REQUEST_ID_HEADER,
                           REST_ARRAY_HEADER, REST_BODY_HEADER}) do
      headers:remove(name)
    end
    return
  end

  if headers:get(CONTENT_RANGE_HEADER) ~= nil then
    headers:replace(":status", "206")
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
    response_handle:headers():remove(REST_BODY_HEADER)
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
    headers:remove(REST_ARRAY_HEADER)
  end
end
