from edgeconv.cli import main

main()
