-- Entry module that returns no function (treadle.run must raise, not crash).
return 42
