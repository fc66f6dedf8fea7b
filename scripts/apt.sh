# Sourced by the scripts that install Debian packages when something is missing:
# apt_install PACKAGE... (apt-get update once per run; sudo when not root).
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
apt_updated=0
apt_install() {
  if [[ $apt_updated -eq 0 ]]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
