# Sourced by the launch scripts (not run on its own).
# shellcheck shell=bash

# One word as Python's shlex.quote writes it, except that `--flag=` stays outside the quotes.
quote() {
  local word=$1 flag=""
  if [[ $word =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    flag=${BASH_REMATCH[1]} word=${BASH_REMATCH[2]}
  fi
  if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s%s' "$flag" "$word"
  else
    printf "%s'%s'" "$flag" "${word//\'/\'\\\'\'}"
  fi
}
