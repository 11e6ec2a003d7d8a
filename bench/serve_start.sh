# Sourced by the server benchmarks: start_server BIN MODEL ARGS... starts `BIN serve --model MODEL --port 0
# ARGS...` in the background, waits (up to 2 minutes) for its "listening on" line and sets pid (the server) and
# url (http://HOST:PORT, no path); an EXIT trap stops the server. Exits with the server's log when it dies first.
start_server() {
  local bin=$1 model=$2
  shift 2
  serve_log=$(mktemp)
  "$bin" serve --model "$model" --port 0 "$@" 2>"$serve_log" &
  pid=$!
  trap 'kill $pid 2>/dev/null || true; rm -f "$serve_log"' EXIT
  for _ in $(seq 1200); do
    grep -q "listening on" "$serve_log" && break
    kill -0 $pid 2>/dev/null || { cat "$serve_log"; exit 1; }
    sleep 0.1
  done
  grep -q "listening on" "$serve_log" ||
    { echo "the server did not come up in 2 minutes" >&2; cat "$serve_log"; exit 1; }
  url=$(grep -o 'http://[0-9.]*:[0-9]*' "$serve_log" | head -1)
}
