package overlay

// TransportRTT exposes transportRTT to the external tests.
var TransportRTT = transportRTT
