module legacy

go 1.19
