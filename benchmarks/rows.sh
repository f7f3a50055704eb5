# Sourced by cpu.sh and gpu.sh, which set $COMMON (throughput.py flags of every row) and define
# `row_flags ROW` (the flags of one row) and `row_env ROW` (its environment settings, may be none). Runs each row of $ROWS into
# $DIR/ROW.json (+ .log) and prints the markdown table.
run_rows() {
  mkdir -p "$DIR"
  for row in $ROWS; do
    flags=$(row_flags "$row") || continue
    echo "== $row: $flags" >&2
    # shellcheck disable=SC2086,SC2046  # the flags and settings are words on purpose
    if ! env $(row_env "$row") python3 -m benchmarks.throughput --json $COMMON $flags $EXTRA \
        > "$DIR/$row.json" 2> "$DIR/$row.log"; then
      echo "$row failed:" >&2
      tail -n 5 "$DIR/$row.log" >&2
      rm -f "$DIR/$row.json"
    else
      tail -n 1 "$DIR/$row.log" >&2
    fi
  done
  python3 -m benchmarks.table "$DIR" $ROWS
}
