--- Writes the error-code table of docs/api.md from lua/wxpay/errors.lua (between the
-- markers `<!-- errors:begin -->` and `<!-- errors:end -->`), so the reference shows
-- exactly the advice wxpay.errors.info(code) gives.  spec/docs_spec.lua fails when
-- they differ.
--   lua5.4 tools/gen-errors-doc.lua          rewrite docs/api.md
--   lua5.4 tools/gen-errors-doc.lua --print  print the table only
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
local errors = require "wxpay.errors"

local M = {}

local function cell(s)
  return (tostring(s):gsub("|", "\\|"):gsub("\n", " "))
end

function M.table()
  local out = { "| code | meaning | advice (`wxpay.errors.info(code).action`) | retryable |",
    "|---|---|---|---|" }
  for _, code in ipairs(errors.codes) do
    local i = errors.info(code)
    out[#out + 1] = ("| `%s` | %s | %s | %s |"):format(code, cell(i.description), cell(i.action),
      i.retryable and "yes" or "no")
  end
  return table.concat(out, "\n") .. "\n"
end

M.BEGIN, M.END = "<!-- errors:begin -->\n", "<!-- errors:end -->"

function M.section(doc)
  local a = doc:find(M.BEGIN, 1, true)
  local b = doc:find(M.END, 1, true)
  if not a or not b then return nil end
  return doc:sub(a + #M.BEGIN, b - 1), a, b
end

if arg and arg[0] and arg[0]:match("gen%-errors%-doc%.lua$") then
  if arg[1] == "--print" then io.write(M.table()) return end
  local path = "docs/api.md"
  local f = assert(io.open(path, "rb"))
  local doc = f:read("*a")
  f:close()
  local _, a, b = M.section(doc)
  assert(a, "docs/api.md has no errors:begin/end markers")
  doc = doc:sub(1, a + #M.BEGIN - 1) .. M.table() .. doc:sub(b)
  f = assert(io.open(path, "wb"))
  f:write(doc)
  f:close()
  print("docs/api.md: error table written (" .. #errors.codes .. " codes)")
end

return M
