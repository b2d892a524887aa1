std = "min"
max_line_length = 120
files["spec"] = { std = "+busted" }
files["lua/wxpay/cosocket.lua"] = { std = "ngx_lua" }
files["bench"] = { std = "+luajit" }
exclude_files = { "build", ".sandbox*", "bench/peers" }
