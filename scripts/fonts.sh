#!/usr/bin/env bash
# Installs the Debian font packages the shipped model's training data was drawn from (generator data
# with --seed 5 and later). core.synth draws from every font installed, and synth.json lists them, so
# the same list on another machine gives the same images. Needs root and apt-get; optional otherwise:
# without these the generator uses whatever fonts the machine has (DejaVu and Liberation here).
# Chosen for digit shapes seen on house numbers: sans, serif, slab, condensed, geometric, monospace,
# hand-drawn and script; left out: symbol, maths, pixel, blackletter and CJK-only fonts.
set -euo pipefail
PACKAGES=(
  fonts-urw-base35 fonts-freefont-ttf fonts-roboto fonts-comic-neue fonts-humor-sans
  fonts-adf-gillius fonts-adf-universalis fonts-adf-berenis fonts-adf-accanthis fonts-adf-baskervald
  fonts-adf-verana fonts-adf-romande fonts-adf-tribun fonts-adf-ikarius fonts-cantarell fonts-lato
  fonts-open-sans fonts-crosextra-carlito fonts-crosextra-caladea fonts-league-spartan fonts-oxygen
  fonts-cabin fonts-hack fonts-jura fonts-quicksand fonts-yanone-kaffeesatz fonts-ebgaramond
  fonts-linuxlibertine fonts-sil-gentium fonts-sil-andika fonts-dancingscript fonts-kristi fonts-breip
  fonts-femkeklaver fonts-beteckna fonts-fantasque-sans fonts-go fonts-b612 fonts-inter fonts-sora
  fonts-bebas-neue fonts-comfortaa fonts-courier-prime fonts-junction fonts-prociono
  fonts-goudybookletter fonts-fanwood fonts-oldstandard fonts-tomsontalks fonts-isabella
  fonts-averia-sans-gwf fonts-averia-serif-gwf fonts-dkg-handwriting fonts-gfs-didot fonts-play
  fonts-rufscript fonts-paratype fonts-stix fonts-vollkorn fonts-cardo fonts-ecolier-court fonts-lobster
)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "fonts: needs root and apt-get; run as root: apt-get install ${PACKAGES[*]}" >&2
  exit 1
fi
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "fonts: installed ${#PACKAGES[@]} packages"
