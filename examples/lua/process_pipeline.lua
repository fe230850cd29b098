-- A process pipeline driven from Lua: `sort | uniq -c` without a shell.
-- One task feeds words to sort's stdin, another pumps sort's output into
-- uniq's stdin line by line, and main reads uniq's counts as they come,
-- then waits for both children (OpenResty's ngx.pipe API):
--
--   lua5.4 examples/lua/process_pipeline.lua [N=1000]
--   apple 1000
--   fig 1000
--   pear 1000
--   sort: exit 0, uniq: exit 0 (3000 lines in, 3 out)
local treadle = require "treadle"

local WORDS = {"pear", "apple", "fig"}

local function main()
  local n = tonumber(arg and arg[1]) or 1000
  local sort = assert(treadle.process.spawn{"sort"})
  local uniq = assert(treadle.process.spawn{"uniq", "-c"})

  local feeder = treadle.spawn(function()
    local lines = {}
    for i = 1, n * #WORDS do lines[i] = WORDS[(i - 1) % #WORDS + 1] end
    assert(sort:write(table.concat(lines, "\n") .. "\n"))
    sort:shutdown("stdin") -- sort writes once its input ended
  end)

  local pump = treadle.spawn(function()
    local count = 0
    while true do
      local line, err = sort:stdout_read_line()
      if not line then assert(err == "closed", err); break end
      assert(uniq:write(line .. "\n"))
      count = count + 1
    end
    uniq:shutdown("stdin")
    return count
  end)

  local out = 0
  while true do
    local line, err = uniq:stdout_read_line()
    if not line then assert(err == "closed", err); break end
    local times, word = line:match("^%s*(%d+)%s+(%S+)$")
    print(word .. " " .. times)
    out = out + 1
  end
  feeder:join()
  local lines_in = pump:join()
  local _, sort_how, sort_status = sort:wait()
  local _, uniq_how, uniq_status = uniq:wait()
  print(string.format("sort: %s %d, uniq: %s %d (%d lines in, %d out)",
    sort_how, sort_status, uniq_how, uniq_status, lines_in, out))
end

treadle.run(main)
