// Package escl serves a minidrv.Driver as an eSCL (AirScan) network
// scanner: HTTP and XML on net/http, the protocol that scanning clients on
// Linux (SANE's sane-airscan backend, so scanimage and every SANE
// frontend), macOS, Windows, iOS and Android speak without a vendor
// driver.
//
// # Resources
//
// Handler serves, under Config.Prefix (DefaultPrefix, "/eSCL"):
//
//	GET    /eSCL/ScannerCapabilities    the platen's size, resolutions, colour
//	                                    modes and formats, from the driver's
//	                                    flatbed properties
//	GET    /eSCL/ScannerStatus          Idle or Processing, and recent jobs
//	POST   /eSCL/ScanJobs               scan:ScanSettings: 201 Created with a
//	                                    Location, or 503 while another job runs
//	                                    or the scanner is not available
//	GET    /eSCL/ScanJobs/{id}/NextDocument
//	                                    the page (PNG or JPEG, encoded with
//	                                    image/png and image/jpeg), then 404:
//	                                    the platen has one page
//	DELETE /eSCL/ScanJobs/{id}          cancel the job; harmless once it is over
//
// # One job at a time
//
// A POST checks the settings, locks the driver (Lock) and writes the
// flatbed's properties, answers 201, and the scan runs in the job's
// goroutine (AcquireItemData) into memory; the driver is unlocked as soon
// as the acquisition returns, and the image is encoded after. The job
// holds the scanner until its page is delivered, it is canceled, it fails,
// or the page waits Config.JobTimeout unfetched: a second POST meanwhile
// gets 503 with Retry-After, never a share of the device.
//
// A client that dies after its POST, before it asks for the page, leaves
// nothing to notice: its job holds the scanner for the rest of the scan
// and then Config.JobTimeout (a minute by default), after which the job
// is listed Aborted (JobTimedOut) in ScannerStatus and the next POST
// succeeds. One that dies while it waits for or downloads the page closes
// its connection, which cancels the job at once (see Cancel); one that
// stays connected but stops reading holds it until a chunk of the page
// has waited Config.JobTimeout to be taken.
//
// # Cancel
//
// A DELETE on a running job, a client that drops its NextDocument
// connection without one, and Handler.Shutdown cancel the job: the waiting
// NextDocument ends at once (410 Gone, or the connection is closed when
// part of the page was sent: a send in progress is cut before the DELETE
// is answered), and while the acquisition runs the driver's
// CancelPendingIO is called, so every transfer stops and the driver ends
// unlocked and idle, ready for the next job. A DELETE answers once the
// driver is unlocked (or after Config.CancelTimeout). sane-airscan sends
// DELETE on SIGINT and then waits for the running NextDocument (for up to
// 10 s): ending it at once is what makes Ctrl-C in scanimage take
// milliseconds, also when the device hangs. A DELETE after the job is over
// (clients send one after every scan) changes nothing.
//
// # Refused input
//
// Requests from the network are checked before anything reaches the
// driver: a body over Config.MaxBodySize gets 413, a content type other
// than XML 415, XML that is malformed, not one scan:ScanSettings element,
// or has a value not of its type 400 (a resolution, offset or length
// that is not decimal digits only, or is over 10000000; a Duplex other
// than true, false, 1 or 0; a value with a child element; XML white
// space around a value is allowed, other space is not); settings the
// scanner does not support (a resolution or colour mode the driver does
// not offer, a format other than PNG and JPEG, an input source other
// than the platen, a region outside the platen or under one pixel) 409
// Conflict; an unknown job 404; another method 405. Every refusal has a
// plain-text reason.
//
// # Units
//
// eSCL regions are in 1/300 inch. The platen offered is the driver's bed
// rounded down to a whole number of pixels at every resolution offered (a
// few hundredths of an inch at most). A region's offset and its length
// each map to the nearest pixel at the requested resolution (the length
// cut at the platen's last pixel): sane-airscan predicts the page's size
// by rounding the length it asked for, in millimetres, so the page it gets
// is the size it expects, except where the length in 1/300 inch cannot
// tell (above 300 dpi, and at some resolutions below it: 13 mm is sent as
// 154/300 inch, 102.7 pixels at 200 dpi, where the client's own
// arithmetic gives 102.4), and the page is then a pixel longer or shorter
// than predicted, which sane-airscan clips or pads. Black and white pages
// carry the driver's bits as 1 for black.
package escl
