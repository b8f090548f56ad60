// Package origin is the video provider's origin (CDN) server: it serves the files of one
// directory over HTTP with full Range support, so that gateways' BitTorrent clients use it as
// the BEP 19 webseed named in each catalog entry, and it counts the bytes it sends to each
// client, which is the figure peer-assisted delivery exists to reduce.
//
// The same handler runs over HTTP/1.1 on a TCP listener ([Server.Serve]) and over HTTP/3 on any
// net.PacketConn ([Server.ServeHTTP3]); the emulator uses the latter on its in-memory UDP
// network and reaches it with [NewHTTP3Client]. Inside the emulator there is no PKI: the server
// presents a self-signed certificate made at start and the client does not verify it, which is
// acceptable only because both ends are emulated on one machine.
//
// Routes:
//
//	GET|HEAD /<name>        a regular file directly in the directory (no subdirectories,
//	                        no dotfiles, symlinks never followed), Range requests included
//	GET      /api/v1/stats  Stats as JSON
//	GET      /metrics       Prometheus text
//
// A file named "metrics" cannot be served; "api" is a directory name, never a file.
package origin
