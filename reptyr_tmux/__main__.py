from reptyr_tmux.cli import main

raise SystemExit(main())
