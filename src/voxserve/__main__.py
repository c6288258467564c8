from voxserve.cli import main

raise SystemExit(main())
