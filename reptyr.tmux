# Lives in the plugin issue: logic will be in Python (reptyr_tmux), this file stays a dozen lines.
