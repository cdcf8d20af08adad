-- wrk script: POST a JSON body read from a file, with an optional bearer token, and count what is sent.
-- Usage: wrk -s bench/post.lua URL -- BODY_FILE [API_KEY]
-- The request is built once per thread in init(); request() only counts it, so that done() can print
-- "bench: sent N": the requests written, including those still in flight when wrk stops (which its own
-- "N requests in" line leaves out).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local request_bytes
sent = 0

function init(args)
  local body_file = assert(args[1], "usage: wrk -s post.lua URL -- BODY_FILE [API_KEY]")
  local file = assert(io.open(body_file, "rb"))
  local body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  if args[2] and args[2] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  end
  request_bytes = wrk.format()
end

function request()
  sent = sent + 1
  return request_bytes
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("sent")
  end
  io.write(string.format("bench: sent %d\n", total))
end
