from iqaflow.cli import main

main()
