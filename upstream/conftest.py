# upstream/src/new/tests/ are verl's tests-to-be: they import names that only a verl with the series
# applied has, and run inside that tree (upstream/check.sh). Never collect them from here.
collect_ignore_glob = ["src/*"]
