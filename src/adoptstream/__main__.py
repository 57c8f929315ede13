from adoptstream.cli import main

raise SystemExit(main())
