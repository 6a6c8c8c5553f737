from reptyr_tmux.frontends.cli import main

raise SystemExit(main())
