--- The README's tested snippets: a fenced block preceded by an HTML comment
-- `<!-- test: KIND [WORD|KEY=VALUE]... -->` (KIND: lua, sh, nginx).  Used by
-- spec/readme_spec.lua (lua, sh) and tools/suites/readme-nginx.sh (nginx):
--   lua5.4 spec/readme_blocks.lua README.md nginx conf    prints that block
-- In a lua block, `--> TEXT` after a statement is what that statement prints
-- (one line, compared as a prefix; "…" stands for anything).
local M = {}

function M.blocks(text)
  local list = {}
  for marker, lang, code in text:gmatch("<!%-%- test: ([^\n]-) %-%->\n```(%w*)\n(.-\n)```") do
    local words, attrs = {}, {}
    for w in marker:gmatch("%S+") do
      local k, v = w:match("^([%w_]+)=(.*)$")
      if k then attrs[k] = v else words[#words + 1] = w end
    end
    list[#list + 1] = { kind = table.remove(words, 1), lang = lang, words = words,
      attrs = attrs, code = code }
  end
  return list
end

--- The blocks of one kind that carry every word in `want`.
function M.find(text, kind, ...)
  local out = {}
  for _, b in ipairs(M.blocks(text)) do
    local ok = b.kind == kind
    for _, w in ipairs { ... } do
      local has = false
      for _, bw in ipairs(b.words) do has = has or bw == w end
      ok = ok and has
    end
    if ok then out[#out + 1] = b end
  end
  return out
end

--- The `--> TEXT` expectations of a lua block, in order, as Lua patterns.
function M.expectations(code)
  local out = {}
  for line in code:gmatch("[^\n]*") do
    local want = line:match("%-%->%s(.*)$")
    if want then
      want = want:gsub("%s+$", ""):gsub("%%", "%%%%"):gsub("[%^%$%(%)%.%[%]%*%+%-%?]", "%%%0")
        :gsub("…", ".*")
      out[#out + 1] = "^" .. want
    end
  end
  return out
end

if arg and arg[0] and arg[0]:match("readme_blocks%.lua$") and arg[1] then
  local f = assert(io.open(arg[1], "rb"))
  local text = f:read("*a")
  f:close()
  local unpack = rawget(table, "unpack") or rawget(_G, "unpack")
  local found = M.find(text, arg[2], select(3, unpack(arg)))
  if #found ~= 1 then
    io.stderr:write(("readme_blocks: %d blocks match, want 1\n"):format(#found))
    os.exit(1)
  end
  io.write(found[1].code)
end

return M
