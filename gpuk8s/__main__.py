from gpuk8s.cli import main

main()
