from benchmarks.sweeps.cli import main

main()
