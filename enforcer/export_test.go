package enforcer

// ReplayWithDecoders is Replay with the given number of decoders, so that
// tests cover pools of other sizes than this machine's.
var ReplayWithDecoders = replay
