from ooc.cli import main

main()
