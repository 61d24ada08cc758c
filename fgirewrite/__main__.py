from fgirewrite.cli import main

main()
