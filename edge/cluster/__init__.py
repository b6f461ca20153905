"""Work spread over a Ray cluster (`--cluster`, the optional extra humwatch[cluster]; never on the Pi):
connect (the address, the workers, results in order), batch (`humwatch batch --cluster`), local (a
cluster of `ray start` processes on this machine, for the tests and `humwatch bench-cluster`)."""
