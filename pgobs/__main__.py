from pgobs.cli.app import main

main()
