# The race checks (d2, d3) against a variant of 006 without the advisory lock, to show that they can fail.
import os
import subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_fair_claim as t
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
for name, fn in [("d3", t.test_race_interleaved), ("d2", t.test_submit_race)]:
    db = t.fresh('fair_race_nolock', 'old')
    subprocess.run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "54329", "-U", "lector",
                    "-d", db, "-f", os.path.join(os.path.dirname(os.path.abspath(__file__)), "nolock_variant.sql")], check=True, stdout=subprocess.DEVNULL)
    print(name, "->", fn(db))
    t.drop(db)
