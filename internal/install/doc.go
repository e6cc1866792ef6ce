// Package install fetches, verifies and keeps the Firecracker releases that
// kindling runs, and finds the executables kindling uses.
//
// Install downloads an official Firecracker release archive for the host
// architecture, checks it against the checksum file published beside it,
// extracts only the firecracker and jailer executables, checks each against
// the SHA256SUMS file the archive carries, and moves them into place under a
// directory named by the release, with a "current" link to the one in use.
// Every step works in a temporary directory inside the install directory and
// the release appears with one rename, so a failure of any kind (network,
// checksum, truncated archive, full disk, cancelled context) leaves nothing
// installed. List and Uninstall manage what is installed; Find resolves an
// executable: the path given, else $KINDLING_FIRECRACKER (or
// $KINDLING_JAILER), else PATH, else the installed "current" release.
//
// It is not a package manager: it knows one upstream layout and two
// executables. The kindling CLI (install, uninstall, run --install,
// version) and package sandbox (its Firecracker lookup) import it; it
// imports nothing of kindling but internal/errdefs.
package install
