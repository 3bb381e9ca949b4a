from codexw.cli.app import main

main()
