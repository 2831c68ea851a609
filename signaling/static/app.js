// kpcall viewer page: plain JavaScript, no build step, no libraries (the page works offline).
//
// Joins a room as a "viewer" over the signaling WebSocket (/ws), answers the receiver's offer (the
// synthesized video track and a "control" data channel: stats, status, rate decisions, acks and
// errors in; commands and avatar uploads out) and, on request, offers the sender a receive-only
// VP8 connection for its original pictures. A call room (peers with role "participant") shows the call grid
// instead (call_grid.js: one tile per participant's face). Protocol: signaling/PROTOCOL.md.
"use strict";

(() => {
  const MAX_AVATAR_BYTES = 4 * 1024 * 1024; // signaling/control.py MAX_AVATAR_BYTES
  const AVATAR_CHUNK_BYTES = 32 * 1024; // signaling/control.py MAX_AVATAR_CHUNK_BYTES
  const MAX_AVATAR_PIXELS = 4096 * 4096; // receiver/session.py MAX_AVATAR_PIXELS
  const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,64}$/; // signaling/messages.py (no dots: "." and ".." are not rooms)
  const CONFIRM_TIMEOUT_MS = 8000; // a command without its confirmation by then is reported as failed
  const AVATAR_TIMEOUT_MS = 45000; // face crop + reference preparation at the receiver
  const ORIGINAL_TIMEOUT_MS = 12000;
  const ICE_GATHER_TIMEOUT_MS = 2000;
  const CHART_SECONDS = 120;
  const STALE_STATS_MS = 3500;
  const LOG_ENTRIES = 80;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  const state = {
    room: "demo",
    token: params.get("token"),
    ws: null,
    peerId: null,
    joined: false,
    iceServers: [], // TURN with time-limited credentials, when the server hands them out (ice_servers, before joined)
    receiverId: null,
    senderId: null,
    synth: null, // {pc, peer, channel, answered, playing}
    orig: null, // {pc, peer, channel, offered, timer}
    wantOriginal: false,
    receiverStatus: null, // {state, detail}
    stats: null, // the receiver's latest stats values
    statsAt: 0,
    rate: null, // the latest rate_decision
    browser: { synthKbps: null, vp8Kbps: null, fps: null, jitterBufferMs: null, decodeMs: null, vp8Codec: null },
    history: [], // {t, wire, payload, vp8}
    pending: {}, // per control: {value, timer}
    lastControl: null,
    uploadId: Math.floor(Math.random() * 1e6),
    reconnectMs: 1000,
    reconnectTimer: null,
  };
  window.kpcall = state; // for tests and the curious

  // -- small helpers ---------------------------------------------------------------------------
  function fmt(value, digits = 1) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    if (typeof value !== "number") return String(value);
    return value >= 100 ? value.toFixed(0) : value.toFixed(digits);
  }

  function log(kind, text) {
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString([], { hour12: false });
    const span = document.createElement("span");
    span.textContent = text;
    if (kind === "error") span.className = "log-error";
    if (kind === "ok") span.className = "log-ok";
    item.append(time, span);
    const list = $("log");
    list.prepend(item);
    while (list.children.length > LOG_ENTRIES) list.lastChild.remove();
  }

  function setPill(kind, text) {
    const pill = $("conn-pill");
    pill.className = `pill pill-${kind}`;
    pill.textContent = text;
  }

  function setBanner(kind, text) {
    const banner = $("banner");
    if (!text) {
      banner.hidden = true;
      return;
    }
    banner.hidden = false;
    banner.className = `banner banner-${kind}`;
    banner.textContent = text;
  }

  const FEEDBACK = { keypoints: "k-feedback", max_kbps: "kbps-feedback", view: "view-feedback", avatar: "avatar-feedback", original: null };

  function feedback(control, kind, text) {
    const id = FEEDBACK[control];
    if (id) {
      const el = $(id);
      el.className = `feedback ${kind}`;
      el.textContent = text;
    }
    if (kind === "error") log("error", text);
    else if (kind === "ok") log("ok", text);
  }

  function settle(control, kind, text) {
    const pending = state.pending[control];
    if (pending) clearTimeout(pending.timer);
    delete state.pending[control];
    feedback(control, kind, text);
  }

  function expect(control, value, timeoutMs, failText) {
    const previous = state.pending[control];
    if (previous) clearTimeout(previous.timer);
    const entry = { value, timer: null };
    entry.timer = setTimeout(() => {
      if (state.pending[control] === entry) settle(control, "error", failText);
    }, timeoutMs);
    state.pending[control] = entry;
    state.lastControl = control;
  }

  // -- signaling -------------------------------------------------------------------------------
  function wsSend(msg) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  function sendCandidate(peer, candidate) {
    if (!candidate || !candidate.candidate) return;
    wsSend({ type: "candidate", to: peer, candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex });
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    setPill("wait", "Connecting…");
    const ws = new WebSocket(url);
    state.ws = ws;
    ws.onopen = () => {
      const join = { type: "join", room: state.room, role: "viewer" };
      if (state.token) join.token = state.token;
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        log("error", `unreadable message from the signaling server: ${err}`);
        return;
      }
      onSignal(msg).catch((err) => log("error", `signaling: ${err.message || err}`));
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return; // replaced on purpose (a room change)
      state.ws = null;
      state.joined = false;
      closeSynth();
      closeOriginal(true);
      state.receiverId = state.senderId = null;
      grid.closeAll();
      const seconds = Math.round(state.reconnectMs / 1000);
      setPill("bad", "Offline");
      setBanner("error", `Lost the signaling server${event.reason ? ` (${event.reason})` : ""}; reconnecting in ${seconds} s…`);
      updateView();
      state.reconnectTimer = setTimeout(connect, state.reconnectMs);
      state.reconnectMs = Math.min(15000, state.reconnectMs * 2);
    };
  }

  function notePeer(peer) {
    if (peer.role === "receiver") state.receiverId = peer.peer_id;
    if (peer.role === "sender") state.senderId = peer.peer_id;
    if (peer.role === "participant") grid.participantJoined(peer.peer_id);
  }

  async function onSignal(msg) {
    switch (msg.type) {
      case "ice_servers":
        state.iceServers = msg.servers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
        log("info", `the server handed out ${msg.servers.length} ICE server${msg.servers.length === 1 ? "" : "s"} (TURN relay)`);
        return;
      case "joined":
        state.peerId = msg.peer_id;
        state.joined = true;
        state.reconnectMs = 1000;
        msg.peers.forEach(notePeer);
        setPill("ok", `Room ${state.room}`);
        $("peer-info").textContent = `you are viewer ${msg.peer_id}`;
        log("info", `joined room "${state.room}" (${msg.peers.length} other participant${msg.peers.length === 1 ? "" : "s"})`);
        if (state.wantOriginal && state.senderId) startOriginal();
        break;
      case "peer_joined":
        notePeer(msg);
        if (msg.role === "receiver") log("info", "the receiver joined; it is calling this page");
        if (msg.role === "participant") log("info", `participant ${msg.peer_id} joined the call`);
        if (msg.role === "sender") {
          log("info", "a sender joined");
          if (state.wantOriginal) startOriginal();
        }
        break;
      case "peer_left":
        grid.peerLeft(msg.peer_id, msg.reason);
        if (msg.peer_id === state.receiverId) {
          state.receiverId = null;
          state.receiverStatus = null;
          closeSynth();
          log("error", `the receiver left (${msg.reason || "left"})`);
        }
        if (msg.peer_id === state.senderId) {
          state.senderId = null;
          log("info", `the sender left (${msg.reason || "left"})`);
          if (state.orig) {
            closeOriginal(true);
            $("orig-overlay-text").textContent = "The sender left; its original pictures return when a sender joins.";
          }
        }
        break;
      case "offer":
        if (grid.takes(msg)) await grid.onOffer(msg);
        else if (msg.from === state.receiverId || !state.receiverId) await answerReceiver(msg);
        break;
      case "answer":
        if (state.orig && msg.from === state.orig.peer) {
          await state.orig.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        }
        break;
      case "candidate": {
        if (grid.takes(msg)) {
          await grid.onCandidate(msg);
          break;
        }
        const target = state.synth && msg.from === state.synth.peer ? state.synth : state.orig && msg.from === state.orig.peer ? state.orig : null;
        if (target && msg.candidate) {
          await target.pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex });
        }
        break;
      }
      case "error":
        log("error", `signaling server: ${msg.message}`);
        if (["unauthorized", "room_full", "server_full", "role_taken", "over_quota", "rate_limited"].includes(msg.code) && msg.ref === "join") {
          setBanner("error", `Cannot join room "${state.room}": ${msg.message}`);
        }
        if (msg.code === "forbidden" && msg.ref === "offer") settle("original", "error", msg.message); // not granted the original
        return;
      default:
        return;
    }
    updateView();
  }

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => pc.iceGatheringState === "complete" && done();
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  // -- the receiver's synthesized video and control channel --------------------------------------
  async function answerReceiver(msg) {
    closeSynth();
    state.receiverId = msg.from;
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    const synth = { pc, peer: msg.from, channel: null, answered: false, playing: false, bytes: null, at: 0 };
    state.synth = synth;
    pc.ontrack = (event) => {
      const video = $("synth-video");
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
      video.play().catch(() => {});
    };
    pc.ondatachannel = (event) => {
      const channel = event.channel;
      synth.channel = channel;
      channel.onopen = () => log("info", "control channel to the receiver is open");
      channel.onmessage = (e) => onControl(e.data);
      channel.onclose = () => {
        if (state.synth === synth) log("info", "control channel to the receiver closed");
      };
    };
    pc.onicecandidate = (event) => synth.answered && sendCandidate(synth.peer, event.candidate);
    pc.onconnectionstatechange = () => {
      if (state.synth !== synth) return;
      if (pc.connectionState === "failed") {
        log("error", "the connection to the receiver failed (no network path between this browser and the receiver)");
        setBanner("error", "Cannot reach the receiver: no network path between this browser and the receiver (check --host-candidates / --ice-server).");
      }
      if (pc.connectionState === "connected") log("ok", "connected to the receiver");
    };
    await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    if (state.synth !== synth) return;
    wsSend({ type: "answer", to: synth.peer, sdp: pc.localDescription.sdp });
    synth.answered = true;
  }

  function closeSynth() {
    const synth = state.synth;
    state.synth = null;
    if (synth) synth.pc.close();
    const video = $("synth-video");
    video.srcObject = null;
    state.stats = null;
    state.rate = null;
    state.browser.synthKbps = state.browser.fps = state.browser.jitterBufferMs = state.browser.decodeMs = null;
    for (const control of ["keypoints", "max_kbps", "view", "avatar"]) {
      if (state.pending[control]) settle(control, "error", "the receiver went away before confirming");
    }
    setControlGranted(true); // the next receiver's status says again
  }

  function onControl(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      log("error", `unreadable control message from the receiver: ${err}`);
      return;
    }
    switch (msg.type) {
      case "stats":
        if (msg.source === "receiver") {
          state.stats = msg.values;
          state.statsAt = performance.now();
        }
        break;
      case "rate_decision":
        onRateDecision(msg);
        break;
      case "status":
        state.receiverStatus = msg;
        if (typeof msg.control === "boolean") setControlGranted(msg.control);
        if (msg.state === "error") log("error", `receiver: ${msg.detail}`);
        else log("info", `receiver: ${msg.detail || msg.state}`);
        break;
      case "ack":
        onAck(msg);
        break;
      case "error":
        onControlError(msg);
        break;
      default:
        break;
    }
    renderStats();
    updateView();
  }

  // The enhancement layer of a rate decision or stats: "enhancement qp 55", "enhancement qp 55, every 3rd frame",
  // "enhancement 128² qp 55, every 2nd frame" (a top rung's picture larger than the model's own), "motion only", or null
  // when unknown. (rate_decision omits enhancement_qp on a motion-only rung; stats carry it as null once the sender decided.)
  function enhancementText(source) {
    if (!source || source.keypoints === undefined) return null;
    const qp = source.enhancement_qp;
    if (qp === null || qp === undefined) return "motion only";
    const every = source.enhancement_interval;
    const size = source.enhancement_size ? `${source.enhancement_size}² ` : "";
    const text = `enhancement ${size}qp ${qp}`;
    return every > 1 ? `${text}, every ${every === 2 ? "2nd" : every === 3 ? "3rd" : `${every}th`} frame` : text;
  }

  function onRateDecision(msg) {
    const previous = state.rate;
    state.rate = msg;
    if (!previous || previous.keypoints !== msg.keypoints || previous.frames_per_packet !== msg.frames_per_packet ||
        enhancementText(previous) !== enhancementText(msg)) {
      log("info", `sender: K = ${msg.keypoints}, ${msg.frames_per_packet} frame${msg.frames_per_packet === 1 ? "" : "s"}/packet, ${msg.preset}, ${enhancementText(msg)} (${msg.reason})`);
      flash("stat-k");
    }
    // Controls follow the call's setting unless the visitor is busy with them.
    if ($("k-auto").checked && !state.pending.keypoints) {
      $("k-range").value = msg.keypoints;
      $("k-out").textContent = `auto (${msg.keypoints})`;
    }
    const input = $("kbps-input");
    if (document.activeElement !== input && !state.pending.max_kbps && (!previous || previous.max_kbps !== msg.max_kbps)) {
      input.value = msg.max_kbps === null ? 0 : msg.max_kbps;
    }
    const k = state.pending.keypoints;
    if (k) {
      if (k.value === "auto") settle("keypoints", "ok", `keypoints back to automatic — sender confirmed (K = ${msg.keypoints})`);
      else if (msg.keypoints === k.value) settle("keypoints", "ok", `keypoints set to ${k.value} — sender confirmed`);
    }
    const cap = state.pending.max_kbps;
    if (cap) {
      const want = cap.value > 0 ? cap.value : null;
      if (msg.max_kbps === want || (want !== null && msg.max_kbps !== null && Math.abs(msg.max_kbps - want) < 1e-6)) {
        settle("max_kbps", "ok", want === null ? "no cap — sender confirmed" : `max kbps set to ${want} — sender confirmed`);
      }
    }
  }

  function onAck(msg) {
    const fields = msg.command.split(",");
    if (fields.includes("view")) settle("view", "ok", msg.detail || "view set");
    if (fields.includes("avatar")) {
      settle("avatar", "ok", msg.detail || "portrait changed");
      $("avatar-progress").hidden = true;
    }
    for (const field of ["keypoints", "max_kbps"]) {
      if (fields.includes(field) && state.pending[field]) feedback(field, "pending", "sent to the sender; waiting for its confirmation…");
    }
  }

  const ERROR_CONTROL = { bad_view: "view", bad_avatar: "avatar", too_many_viewers: "original" };

  function onControlError(msg) {
    let controls = ERROR_CONTROL[msg.code] ? [ERROR_CONTROL[msg.code]] : [];
    if (msg.code === "forbidden") { // this viewer may watch, not steer: every pending control hears why
      controls = ["keypoints", "max_kbps", "view", "avatar"].filter((c) => state.pending[c]);
      setControlGranted(false, msg.message);
    }
    if (msg.code === "no_sender" || msg.code === "bad_command") controls = ["keypoints", "max_kbps"].filter((c) => state.pending[c]);
    if (!controls.length && state.lastControl && state.pending[state.lastControl]) controls = [state.lastControl];
    if (!controls.length) {
      log("error", `receiver: ${msg.message}`);
      return;
    }
    for (const control of controls) settle(control, "error", msg.message);
    if (controls.includes("avatar")) $("avatar-progress").hidden = true;
  }

  // -- commands --------------------------------------------------------------------------------
  // The receiver tells (status.control, or a "forbidden" error) whether this viewer may send commands and avatars;
  // without the grant the controls are disabled and say how to get it (a viewer ticket issued with --control).
  function setControlGranted(granted, why) {
    const card = $("controls-title").closest("section");
    const note = card.querySelector(".card-head .muted");
    if (note && note.dataset.granted === undefined) note.dataset.granted = note.textContent;
    if (note) note.textContent = granted ? note.dataset.granted : "watch only: control not granted";
    card.title = granted ? "" : why || "This viewer may watch, not steer the call: join with a viewer ticket issued with --control.";
    for (const el of card.querySelectorAll("input, button, select")) el.disabled = !granted;
    if (!granted && state.controlGranted !== false && !why) log("info", card.title); // an error (why) is logged where it is settled
    state.controlGranted = granted;
  }

  function controlChannel() {
    const channel = state.synth && state.synth.channel;
    return channel && channel.readyState === "open" ? channel : null;
  }

  function sendCommand(control, fields, value, sentText) {
    const channel = controlChannel();
    if (!channel) {
      settle(control, "error", "not connected to the receiver: nothing was sent");
      return false;
    }
    channel.send(JSON.stringify({ type: "command", ...fields }));
    const who = control === "keypoints" || control === "max_kbps" ? "the sender" : "the receiver";
    expect(control, value, CONFIRM_TIMEOUT_MS, `no confirmation from ${who} within ${CONFIRM_TIMEOUT_MS / 1000} s`);
    feedback(control, "pending", sentText);
    return true;
  }

  function setKeypoints(value) {
    sendCommand("keypoints", { keypoints: value }, value, value === "auto" ? "asking for automatic keypoints…" : `asking for ${value} keypoints…`);
  }

  function setMaxKbps(text) {
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value) || value < 0 || value > 100000) {
      settle("max_kbps", "error", `"${text}" is not a rate: enter kbps from 0 (no cap) to 100000`);
      return;
    }
    sendCommand("max_kbps", { max_kbps: value }, value, value > 0 ? `asking for a ${value} kbps cap…` : "asking for no cap…");
  }

  let viewTimer = null;
  function sendView(view, text) {
    clearTimeout(viewTimer);
    sendCommand("view", { view }, view, text || `asking for view ${view}…`);
  }

  function sliderView() {
    const yaw = $("yaw").value, pitch = $("pitch").value, roll = $("roll").value;
    $("yaw-out").textContent = `${yaw}°`;
    $("pitch-out").textContent = `${pitch}°`;
    $("roll-out").textContent = `${roll}°`;
    clearTimeout(viewTimer);
    viewTimer = setTimeout(() => sendView(`yaw=${yaw},pitch=${pitch},roll=${roll}`), 180);
  }

  function resetSliders() {
    for (const id of ["yaw", "pitch", "roll"]) {
      $(id).value = 0;
      $(`${id}-out`).textContent = "0°";
    }
  }

  // -- avatar upload ---------------------------------------------------------------------------
  function toBase64(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    return btoa(text);
  }

  async function waitForBuffer(channel) {
    if (channel.bufferedAmount < 1 << 20) return;
    channel.bufferedAmountLowThreshold = 256 * 1024;
    await new Promise((resolve) => channel.addEventListener("bufferedamountlow", resolve, { once: true }));
  }

  // Sends an encoded image as avatar_chunk messages. The page checks files first (uploadAvatar);
  // the receiver checks again, so a caller that skips those checks gets the receiver's error.
  async function sendAvatarBytes(bytes, name) {
    const channel = controlChannel();
    if (!channel) {
      settle("avatar", "error", "not connected to the receiver: nothing was sent");
      return false;
    }
    state.uploadId = (state.uploadId + 1) % 2 ** 31;
    const count = Math.max(1, Math.ceil(bytes.length / AVATAR_CHUNK_BYTES));
    const bar = $("avatar-progress");
    bar.hidden = false;
    expect("avatar", name, AVATAR_TIMEOUT_MS, `the receiver did not confirm the new portrait within ${AVATAR_TIMEOUT_MS / 1000} s`);
    feedback("avatar", "pending", `uploading ${name}…`);
    for (let index = 0; index < count; index += 1) {
      const chunk = bytes.subarray(index * AVATAR_CHUNK_BYTES, (index + 1) * AVATAR_CHUNK_BYTES);
      await waitForBuffer(channel);
      if (channel.readyState !== "open") {
        settle("avatar", "error", "the connection to the receiver closed during the upload");
        bar.hidden = true;
        return false;
      }
      channel.send(JSON.stringify({ type: "avatar_chunk", upload_id: state.uploadId, index, count, data: toBase64(chunk) }));
      bar.firstElementChild.style.width = `${Math.round(((index + 1) / count) * 100)}%`;
    }
    if (state.pending.avatar) feedback("avatar", "pending", `${name} uploaded; the receiver is preparing it…`);
    return true;
  }
  state.sendAvatarBytes = sendAvatarBytes;

  async function uploadAvatar(file) {
    if (!file) return;
    const name = `"${file.name}"`;
    if (!/^image\/(jpeg|png|webp)$/.test(file.type)) {
      settle("avatar", "error", `${name} is not a JPEG, PNG or WebP image (${file.type || "unknown type"})`);
      return;
    }
    if (file.size === 0) {
      settle("avatar", "error", `${name} is empty`);
      return;
    }
    if (file.size > MAX_AVATAR_BYTES) {
      settle("avatar", "error", `${name} is ${file.size.toLocaleString("en")} bytes: over the limit of 4 MB (${MAX_AVATAR_BYTES.toLocaleString("en")} bytes)`);
      return;
    }
    try {
      const bitmap = await createImageBitmap(file);
      const pixels = bitmap.width * bitmap.height;
      bitmap.close();
      if (pixels > MAX_AVATAR_PIXELS) {
        settle("avatar", "error", `${name} has ${pixels} pixels; the limit is 4096 × 4096`);
        return;
      }
    } catch (err) {
      settle("avatar", "error", `${name} could not be decoded as an image`);
      return;
    }
    const preview = $("avatar-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    await sendAvatarBytes(new Uint8Array(await file.arrayBuffer()), name);
  }

  // -- the sender's original pictures (VP8) ----------------------------------------------------
  function preferVp8(transceiver) {
    try {
      const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
      const vp8 = codecs.filter((c) => /vp8/i.test(c.mimeType));
      if (vp8.length && transceiver.setCodecPreferences) transceiver.setCodecPreferences(vp8);
    } catch (err) {
      log("info", `could not restrict the original stream to VP8 (${err.message || err}); the browser picks`);
    }
  }

  async function startOriginal() {
    state.wantOriginal = true;
    closeOriginal(true);
    if (!state.senderId) {
      $("orig-overlay-text").textContent = "There is no sender in this room yet; its pictures appear when one joins.";
      log("info", "original pictures requested; waiting for a sender");
      updateView();
      return;
    }
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    const orig = { pc, peer: state.senderId, channel: null, offered: false, timer: null, playing: false };
    state.orig = orig;
    preferVp8(pc.addTransceiver("video", { direction: "recvonly" }));
    const channel = pc.createDataChannel("control");
    orig.channel = channel;
    channel.onmessage = (event) => onOriginalControl(orig, event.data);
    pc.ontrack = (event) => {
      const video = $("orig-video");
      video.srcObject = new MediaStream([event.track]);
      video.play().catch(() => {});
    };
    pc.onicecandidate = (event) => orig.offered && sendCandidate(orig.peer, event.candidate);
    pc.onconnectionstatechange = () => {
      if (state.orig === orig && pc.connectionState === "failed") {
        failOriginal("the connection to the sender failed (no network path between this browser and the sender)");
      }
    };
    $("orig-overlay-text").textContent = "Asking the sender for its original pictures…";
    updateView();
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (state.orig !== orig) return;
    wsSend({ type: "offer", to: orig.peer, sdp: pc.localDescription.sdp });
    orig.offered = true;
    orig.timer = setTimeout(() => {
      if (state.orig === orig && !orig.playing) failOriginal(`the sender did not send its pictures within ${ORIGINAL_TIMEOUT_MS / 1000} s`);
    }, ORIGINAL_TIMEOUT_MS);
  }

  function failOriginal(text) {
    closeOriginal(false);
    $("orig-overlay-text").textContent = `Could not show the original: ${text}.`;
    log("error", `original pictures: ${text}`);
    updateView();
  }

  function onOriginalControl(orig, data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      return;
    }
    if (msg.type === "status" && msg.state === "original") {
      $("orig-caption").textContent = `Ordinary VP8 video straight from the sender: ${msg.detail}.`;
      log("ok", `original pictures: ${msg.detail}`);
    } else if (msg.type === "error" && state.orig === orig) {
      failOriginal(msg.message);
    }
  }

  function closeOriginal(keepWanted) {
    const orig = state.orig;
    state.orig = null;
    if (orig) {
      clearTimeout(orig.timer);
      orig.pc.close();
    }
    if (!keepWanted) state.wantOriginal = false;
    $("orig-video").srcObject = null;
    state.browser.vp8Kbps = null;
    state.browser.vp8Codec = null;
  }

  // -- stats -----------------------------------------------------------------------------------
  /** The getStats report and its inbound video entry of a connection holder, or null (none, or it closed meanwhile). */
  async function inboundStats(holder) {
    if (!holder) return null;
    try {
      const report = await holder.pc.getStats();
      const s = inboundVideo(report);
      return s ? { report, s } : null;
    } catch (err) {
      return null;
    }
  }

  function inboundVideo(report) {
    let found = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") found = s;
    });
    return found;
  }

  function rateKbps(holder, bytes, nowMs) {
    let kbps = null;
    if (holder.bytes !== null && holder.bytes !== undefined && nowMs > holder.at) kbps = ((bytes - holder.bytes) * 8) / (nowMs - holder.at);
    holder.bytes = bytes;
    holder.at = nowMs;
    return kbps;
  }

  async function pollBrowserStats() {
    const now = performance.now();
    const browser = state.browser;
    const synth = state.synth;
    const synthStats = await inboundStats(synth);
    if (synthStats) {
      const { s } = synthStats;
      browser.synthKbps = rateKbps(synth, s.bytesReceived, now);
      browser.fps = s.framesPerSecond ?? null;
      const emitted = s.jitterBufferEmittedCount - (synth.emitted ?? 0);
      if (emitted > 0) browser.jitterBufferMs = ((s.jitterBufferDelay - (synth.jbDelay ?? 0)) / emitted) * 1000;
      synth.emitted = s.jitterBufferEmittedCount;
      synth.jbDelay = s.jitterBufferDelay;
      const decoded = s.framesDecoded - (synth.decoded ?? 0);
      if (decoded > 0) browser.decodeMs = ((s.totalDecodeTime - (synth.decodeTime ?? 0)) / decoded) * 1000;
      synth.decoded = s.framesDecoded;
      synth.decodeTime = s.totalDecodeTime;
    }
    const orig = state.orig;
    const origStats = await inboundStats(orig);
    if (origStats) {
      const { report, s } = origStats;
      browser.vp8Kbps = rateKbps(orig, s.bytesReceived, now);
      const codec = s.codecId && report.get(s.codecId);
      browser.vp8Codec = codec ? codec.mimeType.replace("video/", "") : null;
    }
    const fresh = state.stats && now - state.statsAt < STALE_STATS_MS;
    if (fresh || browser.vp8Kbps !== null) {
      const s = fresh ? state.stats : {};
      const finite = (v) => (Number.isFinite(v) ? v : null);
      state.history.push({ t: Date.now(), wire: finite(s.wire_kbps_recent), payload: finite(s.payload_kbps_recent), vp8: finite(browser.vp8Kbps) });
      const cutoff = Date.now() - CHART_SECONDS * 1000;
      while (state.history.length && state.history[0].t < cutoff) state.history.shift();
    }
    renderStats();
    drawChart();
    updateView();
  }

  function setStat(id, value, unit) {
    const el = $(id);
    el.querySelector(".value").textContent = value;
    if (unit !== undefined) el.querySelector(".unit").textContent = unit;
  }

  function flash(id) {
    const el = $(id);
    el.classList.remove("flash");
    void el.offsetWidth; // restart the animation
    el.classList.add("flash");
  }

  function glassToGlassMs() {
    const s = state.stats;
    if (!s || s.latency_ms_median === null || s.latency_ms_median === undefined) return null;
    const b = state.browser;
    const pacing = s.fps ? 500 / s.fps : 0; // the video track repeats the newest frame: half a frame on average
    return s.latency_ms_median + pacing + (b.jitterBufferMs || 0) + (b.decodeMs || 0);
  }

  function renderStats() {
    const s = state.stats;
    const b = state.browser;
    const rate = state.rate;
    const now = performance.now();
    const payload = s ? s.payload_kbps_recent ?? s.payload_kbps : null;
    const wire = s ? s.wire_kbps_recent ?? s.wire_kbps_in : null;
    setStat("stat-payload", fmt(payload, 2));
    setStat("stat-wire", fmt(wire, 2));
    setStat("stat-vp8", state.orig ? fmt(b.vp8Kbps, 0) : "off", state.orig && b.vp8Codec ? `kbps ${b.vp8Codec}` : "kbps");
    const k = rate ? rate.keypoints : s ? s.keypoints : null;
    const kMax = s && s.keypoints_max ? s.keypoints_max : null;
    setStat("stat-k", fmt(k, 0), kMax ? `of ${kMax}` : "");
    setStat("stat-fpp", fmt(rate ? rate.frames_per_packet : s ? s.frames_per_packet : null, 0), rate ? rate.preset : "");
    const enhancement = enhancementText(rate || s);
    const enhancedShare = s && s.frames_rendered > 0 ? s.frames_rendered_enhanced / s.frames_rendered : null;
    setStat(
      "stat-enh",
      enhancement === null ? "—" : enhancement === "motion only" ? "off" : enhancement.replace("enhancement ", ""),
      enhancement === "motion only" ? "motion only" : enhancedShare !== null && enhancedShare > 0 ? `${fmt(100 * enhancedShare, 0)}% frames` : "",
    );
    setStat("stat-fps", fmt(s ? s.fps_rendered : null), b.fps !== null && b.fps !== undefined ? `page ${fmt(b.fps, 0)}` : "");
    const g2g = glassToGlassMs();
    setStat("stat-latency", fmt(g2g, 0));
    setStat("stat-loss", s ? `${s.frames_lost ?? 0} / ${s.frames_concealed ?? 0}` : "—");
    setStat("stat-cap", rate ? (rate.max_kbps === null ? "none" : fmt(rate.max_kbps, 1)) : "—");
    $("cost-motion").textContent = wire === null || wire === undefined ? "— kbps" : `${fmt(wire, 2)} kbps motion`;
    $("cost-vp8").textContent = state.orig ? `${fmt(b.vp8Kbps, 0)} kbps VP8` : "off";
    $("caption-k").textContent = k === null || k === undefined ? "K" : String(k);
    if (kMax) {
      const range = $("k-range");
      if (Number(range.max) !== kMax) range.max = kMax;
    }
    if (s) {
      const ratio = state.orig && b.vp8Kbps > 0 && wire > 0 ? b.vp8Kbps / wire : null;
      const parts = [
        ratio !== null ? `the original VP8 stream costs ${fmt(ratio, 0)}× the motion` : null,
        `${s.packets_received} packets received`,
        s.latency_ms_median !== null ? `capture → rendered ${fmt(s.latency_ms_median, 0)} ms` : null,
        b.jitterBufferMs !== null ? `page jitter buffer ${fmt(b.jitterBufferMs, 0)} ms` : null,
        b.decodeMs !== null ? `decode ${fmt(b.decodeMs, 1)} ms` : null,
        `playout delay ${fmt(s.playout_delay_ms, 0)} ms`,
        b.synthKbps !== null ? `synthesized video to this page ${fmt(b.synthKbps, 0)} kbps` : null,
      ];
      $("stat-detail").textContent = parts.filter(Boolean).join(" · ");
      const age = (now - state.statsAt) / 1000;
      $("stats-age").textContent = age < STALE_STATS_MS / 1000 ? "updated every second" : `stale: last update ${age.toFixed(0)} s ago`;
    } else {
      $("stats-age").textContent = "no stats yet";
    }
  }

  // -- chart: kbps over time, log scale --------------------------------------------------------
  function drawChart() {
    const canvas = $("chart");
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const pad = { left: 38, right: 10, top: 10, bottom: 20 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    // only finite positive rates: one Infinity (a rate over a zero-length interval) once made the
    // decade loop below endless and froze the tab
    const values = state.history.flatMap((p) => [p.wire, p.payload, p.vp8]).filter((v) => Number.isFinite(v) && v > 0);
    const lo = 0.1;
    const hi = Math.min(1e7, Math.max(100, ...values.map((v) => v * 1.5)));
    const decades = Math.log10(hi) - Math.log10(lo);
    const y = (v) => pad.top + (1 - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / decades) * plotH;
    const now = Date.now();
    const x = (t) => pad.left + (1 - (now - t) / (CHART_SECONDS * 1000)) * plotW;

    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let v = lo; v <= hi * 1.0001; v *= 10) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = "#2a303b";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(pad.left, yy);
      ctx.lineTo(width - pad.right, yy);
      ctx.stroke();
      ctx.fillStyle = "#8d96a7";
      ctx.fillText(v >= 1 ? `${Math.round(v)}` : v.toFixed(1), pad.left - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "alphabetic";
    for (const [label, seconds] of [["−2 min", CHART_SECONDS], ["−1 min", 60], ["now", 0]]) {
      ctx.fillText(label, Math.min(width - pad.right - 12, Math.max(pad.left + 16, x(now - seconds * 1000))), height - 5);
    }
    ctx.save();
    ctx.translate(10, pad.top + plotH / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText("kbps", 0, 0);
    ctx.restore();

    const series = [
      ["payload", "rgba(155, 231, 214, 0.8)", 1.5, [4, 3]],
      ["wire", "#37c3a3", 2, []],
      ["vp8", "#f0a04b", 2, []],
    ];
    for (const [key, color, lineWidth, dash] of series) {
      ctx.strokeStyle = color;
      ctx.lineWidth = lineWidth;
      ctx.setLineDash(dash);
      ctx.beginPath();
      let drawing = false;
      for (const point of state.history) {
        const v = point[key];
        if (v === null || v === undefined || v <= 0) {
          drawing = false;
          continue;
        }
        if (drawing) ctx.lineTo(x(point.t), y(v));
        else ctx.moveTo(x(point.t), y(v));
        drawing = true;
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
    if (!state.history.length) {
      ctx.fillStyle = "#8d96a7";
      ctx.textAlign = "center";
      ctx.fillText("waiting for the first stats…", pad.left + plotW / 2, pad.top + plotH / 2);
    }
  }

  // -- call state on the page ------------------------------------------------------------------
  function updateView() {
    document.body.classList.toggle("call-mode", grid.active);
    if (grid.active) {
      if (state.ws) grid.update(); // the tiles and the banner
      return;
    }
    const synth = state.synth;
    const video = $("synth-video");
    const playing = Boolean(synth && video.videoWidth > 0 && !video.paused);
    if (synth) synth.playing = playing;
    const status = state.receiverStatus ? state.receiverStatus.state : null;
    let overlay = null;
    let banner = null;
    if (!state.ws) {
      overlay = "Offline";
    } else if (!state.joined) {
      overlay = "Connecting…";
      banner = ["info", "Connecting to the signaling server…"];
    } else if (!state.receiverId) {
      overlay = "Waiting for the receiver…";
      banner = ["wait", `Waiting for the receiver to join room "${state.room}". Start a call with make demo, or pick another room above.`];
    } else if (!synth || !playing) {
      overlay = "Connecting to the receiver…";
      banner = ["info", "The receiver is in the room; connecting to it…"];
    }
    if (playing && (status === "waiting" || status === "sender_left")) {
      banner = ["wait", status === "waiting" ? "The receiver is waiting for a sender to join this room." : state.receiverStatus.detail];
    } else if (playing && status === "error") {
      banner = ["error", `The receiver reports: ${state.receiverStatus.detail}`];
    }
    if (state.ws) {
      if (banner) setBanner(banner[0], banner[1]);
      else setBanner("", "");
    }
    $("synth-overlay").hidden = !overlay;
    if (overlay) $("synth-overlay-text").textContent = overlay;
    $("synth-badge").hidden = !(playing && status !== "sender_left" && status !== "waiting");

    const orig = state.orig;
    const origVideo = $("orig-video");
    if (orig && origVideo.videoWidth > 0 && !orig.playing) {
      orig.playing = true;
      clearTimeout(orig.timer);
      log("ok", `the sender's original pictures are playing (${origVideo.videoWidth}×${origVideo.videoHeight})`);
    }
    const origPlaying = Boolean(orig && orig.playing);
    $("orig-overlay").hidden = origPlaying;
    $("orig-show").hidden = Boolean(orig) || (state.wantOriginal && !state.senderId);
    $("orig-hide").hidden = !(orig || state.wantOriginal);
  }

  /** receive.html handed over to this page (it could not render fast enough, or the room has a receiver): say why. */
  function showFallback(reason) {
    if (!reason) return;
    const note = $("fallback-note");
    const again = document.createElement("a");
    again.href = `receive.html?room=${encodeURIComponent(state.room)}`;
    again.textContent = "render in this browser again";
    note.textContent = `Showing the receiver's VP8: rendering the face in this browser handed over because ${reason.slice(0, 300)}. `;
    note.append(again);
    note.hidden = false;
    log("info", `rendering in this browser handed over to the receiver's VP8: ${reason.slice(0, 300)}`);
  }

  // -- wiring ----------------------------------------------------------------------------------
  function chooseRoom() {
    const requested = params.get("room");
    if (requested && ROOM_PATTERN.test(requested)) return requested;
    if (requested) log("error", `"${requested}" is not a room name (letters, digits, _ - up to 64): joined "demo" instead`);
    return "demo";
  }

  function switchRoom(room) {
    if (!ROOM_PATTERN.test(room)) {
      setBanner("error", `"${room}" is not a room name: use letters, digits, _ - (up to 64)`);
      return;
    }
    if (room === state.room && state.ws) return;
    const url = new URL(location.href);
    url.searchParams.set("room", room);
    history.replaceState(null, "", url);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "changing rooms");
    closeSynth();
    closeOriginal(state.wantOriginal);
    grid.reset();
    Object.assign(state, { room, joined: false, receiverId: null, senderId: null, receiverStatus: null, history: [] });
    document.title = `kpcall — room ${room}`;
    $("receive-link").href = `receive.html?room=${encodeURIComponent(room)}`;
    log("info", `switching to room "${room}"`);
    connect();
    updateView();
  }

  function wire() {
    $("room-form").addEventListener("submit", (event) => {
      event.preventDefault();
      switchRoom($("room-input").value.trim());
    });
    const range = $("k-range");
    range.addEventListener("input", () => {
      $("k-out").textContent = range.value;
    });
    range.addEventListener("change", () => {
      $("k-auto").checked = false;
      setKeypoints(Number(range.value));
    });
    $("k-auto").addEventListener("change", (event) => {
      if (event.target.checked) {
        $("k-out").textContent = "auto";
        setKeypoints("auto");
      } else {
        $("k-out").textContent = range.value;
        setKeypoints(Number(range.value));
      }
    });
    $("kbps-form").addEventListener("submit", (event) => {
      event.preventDefault();
      setMaxKbps($("kbps-input").value);
    });
    $("view-front").addEventListener("click", () => {
      resetSliders();
      sendView("frontal", "asking the receiver to face the camera…");
    });
    $("view-follow").addEventListener("click", () => {
      resetSliders();
      sendView("offset:yaw=0,pitch=0,roll=0", "asking the receiver to follow the sender's head…");
    });
    for (const id of ["yaw", "pitch", "roll"]) $(id).addEventListener("input", sliderView);
    $("avatar-file").addEventListener("change", (event) => {
      const file = event.target.files[0];
      event.target.value = ""; // choosing the same file again is a new upload
      uploadAvatar(file).catch((err) => settle("avatar", "error", `upload failed: ${err.message || err}`));
    });
    $("avatar-reset").addEventListener("click", () => {
      $("avatar-preview").hidden = true;
      sendCommand("avatar", { avatar: "reset" }, "reset", "asking for the sender's own portrait…");
    });
    $("orig-show").addEventListener("click", () => startOriginal().catch((err) => failOriginal(err.message || String(err))));
    $("orig-hide").addEventListener("click", () => {
      closeOriginal(false);
      $("orig-overlay-text").textContent = "An ordinary video stream of the same call, for comparison.";
      $("orig-caption").textContent = "Sent as ordinary VP8 video from the sender, only while shown here.";
      log("info", "original pictures hidden (the sender stops sending them)");
      updateView();
    });
    for (const id of ["synth-video", "orig-video"]) {
      for (const name of ["playing", "resize", "loadedmetadata", "emptied"]) $(id).addEventListener(name, updateView);
    }
    window.addEventListener("resize", drawChart);
  }

  const grid = window.createCallGrid({
    send: wsSend,
    iceServers: () => state.iceServers,
    log,
    gathered,
    setBanner,
    room: () => state.room,
  });
  state.grid = grid;

  state.room = chooseRoom();
  showFallback(params.get("fallback"));
  $("receive-link").href = `receive.html?room=${encodeURIComponent(state.room)}`;
  $("room-input").value = state.room;
  document.title = `kpcall — room ${state.room}`;
  wire();
  connect();
  updateView();
  drawChart();
  setInterval(() => pollBrowserStats().catch((err) => log("error", `stats: ${err.message || err}`)), 1000);
})();
