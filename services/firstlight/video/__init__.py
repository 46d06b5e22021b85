"""Video as input: decode untrusted files as a stream (decode), pick the frames worth keeping
(sampler, frames), and turn per-frame results into time segments and video-level search hits
(segments, clip_search). Pure of transports: services wire these in."""
