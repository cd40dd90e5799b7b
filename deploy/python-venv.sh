# Sourced by the scripts that make a Python venv (test-schema.sh,
# webhook-venv.sh); the caller defines `say`. A fresh Debian has python3
# without its venv module: installed with apt-get when we are root, else
# the message says how.
need_python_venv() {
    if python3 -c 'import venv, ensurepip' 2>/dev/null; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        say "python3 has no venv module; install it with: sudo apt-get install -y python3-venv"
        exit 1
    fi
    say "installing python3-venv with apt-get (once)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
}
