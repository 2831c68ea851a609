// kpcall call grid: what the viewer page shows of a call room (participants, `python -m participant`).
//
// One tile per participant: its synthesized face (VP8), its sound (Opus, in step with the face) and a "control"
// channel (status, stats, rate decisions). Each face comes from ONE other participant, the one with the lowest peer
// id other than the face's own; its offer and candidates carry "stream" = the face's participant, and the page
// answers and trickles with the same "stream" (and "to" = the offering participant). One RTCPeerConnection per
// (offering peer, stream): a new offer for a stream replaces the tile's connection (its relay changed), and a
// peer_left closes the tiles' connections that peer offered and removes the tile of its own face.
// app.js hands the room's events in (createCallGrid's hooks); protocol: signaling/PROTOCOL.md §1 and §4.
"use strict";

(() => {
  const STATS_INTERVAL_MS = 1000;
  const STALE_STATS_MS = 3500;
  const PLAYING_STALL_MS = 2500; // a tile whose video time has not moved for this long is not "playing"

  function fmt(value, digits = 1) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "—";
    return value >= 100 ? value.toFixed(0) : value.toFixed(digits);
  }

  /**
   * hooks: send(msg) -> bool (the signaling WebSocket), iceServers() -> RTCIceServer[], log(kind, text),
   * gathered(pc) -> Promise (ICE gathering done or timed out), setBanner(kind, text), room() -> the room's name.
   */
  function createCallGrid(hooks) {
    const $ = (id) => document.getElementById(id);
    const grid = {
      active: false, // a participant was seen in this room: the page shows the grid instead of the one-way panes
      participants: [], // the call's participants (peer ids), in the order they came
      tiles: new Map(), // stream (a participant's peer id) -> tile
      sound: "auto", // "auto": played with sound unless the browser refuses; "blocked": it refused (no gesture yet); "on"; "off"
    };

    // -- tiles -----------------------------------------------------------------------------------
    function addTile(stream) {
      const el = document.createElement("figure");
      el.className = "pane tile";
      el.dataset.stream = stream;
      el.innerHTML =
        '<div class="stage"><video autoplay playsinline></video>' +
        '<div class="overlay"><span class="spinner" aria-hidden="true"></span><span class="overlay-text"></span></div>' +
        '<span class="badge badge-live" hidden>LIVE</span></div>' +
        '<figcaption><span class="tile-name"></span><span class="tile-stats"></span></figcaption>';
      const tile = {
        stream, el, link: null, note: null, lastTime: 0, lastMoveAt: 0,
        video: el.querySelector("video"), overlay: el.querySelector(".overlay"), overlayText: el.querySelector(".overlay-text"),
        badge: el.querySelector(".badge"), name: el.querySelector(".tile-name"), statsEl: el.querySelector(".tile-stats"),
      };
      tile.name.textContent = `participant ${stream}`;
      for (const name of ["playing", "resize", "loadedmetadata", "emptied", "pause"]) tile.video.addEventListener(name, () => renderTile(tile));
      grid.tiles.set(stream, tile);
      $("call-tiles").append(el);
      return tile;
    }

    function removeTile(stream) {
      const tile = grid.tiles.get(stream);
      if (!tile) return;
      closeLink(tile, null);
      grid.tiles.delete(stream);
      tile.el.remove();
    }

    function playing(tile) {
      const video = tile.video;
      return Boolean(tile.link && video.videoWidth > 0 && !video.paused && performance.now() - tile.lastMoveAt < PLAYING_STALL_MS);
    }

    /** Who should offer this face: the participant with the lowest peer id other than its own (null: nobody yet). */
    function relayOf(stream) {
      const others = grid.participants.filter((p) => p !== stream).sort();
      return others.length ? others[0] : null;
    }

    function renderTile(tile) {
      const video = tile.video;
      if (video.currentTime !== tile.lastTime) {
        tile.lastTime = video.currentTime;
        tile.lastMoveAt = performance.now();
      }
      const live = playing(tile);
      let text = null;
      if (!live) {
        const relay = relayOf(tile.stream);
        if (tile.note) text = tile.note;
        else if (tile.link) text = `Connecting to participant ${tile.link.peer}, which relays this face…`;
        else if (!relay) text = "Alone in the call: a face reaches viewers through another participant, who renders it.";
        else text = `Waiting for participant ${relay} to offer this face…`;
      }
      tile.overlay.hidden = !text;
      if (text) tile.overlayText.textContent = text;
      const status = tile.link && tile.link.status ? tile.link.status.state : null;
      tile.badge.hidden = !(live && status !== "waiting" && status !== "sender_left");
      tile.statsEl.textContent = statsText(tile);
    }

    function statsText(tile) {
      const link = tile.link;
      if (!link) return "";
      const s = link.stats && performance.now() - link.statsAt < STALE_STATS_MS ? link.stats : null;
      const b = link.browser;
      const parts = [];
      if (s) {
        parts.push(`rendered ${fmt(s.fps_rendered)} fps`);
        const wire = s.wire_kbps_recent ?? s.wire_kbps_in;
        if (wire !== null && wire !== undefined) parts.push(`motion ${fmt(wire, 2)} kbps`);
        if (s.latency_ms_median !== null && s.latency_ms_median !== undefined) parts.push(`capture → rendered ${fmt(s.latency_ms_median, 0)} ms`);
      }
      if (b.fps !== null) parts.push(`here ${fmt(b.fps, 0)} fps`);
      if (b.audioKbps !== null) parts.push(`sound ${fmt(b.audioKbps, 0)} kbps`);
      parts.push(`via ${link.peer}`);
      return parts.join(" · ");
    }

    // -- sound -------------------------------------------------------------------------------------
    function muted() {
      return grid.sound === "off" || grid.sound === "blocked";
    }

    function play(tile) {
      const video = tile.video;
      video.muted = muted();
      video.play().catch((err) => {
        if (err.name !== "NotAllowedError" || video.muted) return;
        // no sound before a user gesture (the browser's autoplay policy): play muted, offer the button
        if (grid.sound === "auto") {
          grid.sound = "blocked";
          hooks.log("info", "the browser plays sound only after a click: press Unmute to hear the call");
        }
        video.muted = true;
        video.play().catch(() => {});
        renderSound();
      });
    }

    function toggleSound() {
      grid.sound = muted() ? "on" : "off";
      for (const tile of grid.tiles.values()) {
        tile.video.muted = muted();
        if (tile.link) tile.video.play().catch(() => {});
      }
      renderSound();
    }

    function renderSound() {
      const button = $("call-sound");
      button.textContent = muted() ? "Unmute" : "Mute";
      button.classList.toggle("btn-ghost", !muted());
      $("call-sound-note").textContent = grid.sound === "blocked" ? "sound is off until you click (the browser's rule)" : "";
    }

    // -- one tile's connection -------------------------------------------------------------------
    function closeLink(tile, note) {
      const link = tile.link;
      tile.link = null;
      tile.note = note;
      if (link) link.pc.close();
      tile.video.srcObject = null;
      renderTile(tile);
    }

    async function onOffer(msg) {
      const stream = msg.stream;
      const tile = grid.tiles.get(stream) || addTile(stream);
      const replaced = tile.link;
      closeLink(tile, null);
      if (replaced) hooks.log("info", `participant ${msg.from} now relays ${stream}'s face (was ${replaced.peer}): new connection`);
      const pc = new RTCPeerConnection({ iceServers: hooks.iceServers() });
      const link = {
        pc, peer: msg.from, stream, channel: null, answered: false, stats: null, statsAt: 0, status: null, rate: null,
        media: null, browser: { fps: null, videoKbps: null, audioKbps: null, audioBytes: null, videoBytes: null, at: 0 },
      };
      tile.link = link;
      pc.ontrack = (event) => {
        if (tile.link !== link) return;
        const media = event.streams[0] || link.media || new MediaStream();
        if (!event.streams[0] && !media.getTracks().includes(event.track)) media.addTrack(event.track);
        link.media = media;
        if (tile.video.srcObject !== media) tile.video.srcObject = media;
        play(tile);
      };
      pc.ondatachannel = (event) => {
        link.channel = event.channel;
        event.channel.onmessage = (e) => onControl(tile, link, e.data);
      };
      pc.onicecandidate = (event) => {
        const c = event.candidate;
        if (link.answered && c && c.candidate) {
          hooks.send({ type: "candidate", to: link.peer, stream, candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
        }
      };
      pc.onconnectionstatechange = () => {
        if (tile.link !== link) return;
        if (pc.connectionState === "connected") hooks.log("ok", `connected to ${link.peer} for ${stream}'s face`);
        if (pc.connectionState === "failed" || pc.connectionState === "closed") {
          closeLink(tile, `The connection to ${link.peer} ended; waiting for a new offer of this face…`);
          hooks.log("error", `the connection to ${link.peer} for ${stream}'s face ${pc.connectionState}`);
        }
      };
      await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await hooks.gathered(pc);
      if (tile.link !== link) return;
      hooks.send({ type: "answer", to: link.peer, stream, sdp: pc.localDescription.sdp });
      link.answered = true;
    }

    async function onCandidate(msg) {
      const tile = grid.tiles.get(msg.stream);
      const link = tile && tile.link;
      if (!link || link.peer !== msg.from || !msg.candidate) return;
      await link.pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex });
    }

    function onControl(tile, link, data) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (err) {
        hooks.log("error", `unreadable control message from ${link.peer}: ${err}`);
        return;
      }
      if (msg.type === "stats" && msg.source === "receiver") {
        link.stats = msg.values;
        link.statsAt = performance.now();
      } else if (msg.type === "status") {
        link.status = msg;
        if (msg.state === "error") hooks.log("error", `${link.peer} about ${tile.stream}'s face: ${msg.detail}`);
      } else if (msg.type === "rate_decision") {
        link.rate = msg;
      }
      if (tile.link === link) renderTile(tile);
    }

    async function pollStats() {
      for (const tile of grid.tiles.values()) {
        const link = tile.link;
        if (!link || link.pc.connectionState !== "connected") continue;
        const report = await link.pc.getStats();
        const now = performance.now();
        const b = link.browser;
        report.forEach((s) => {
          if (s.type !== "inbound-rtp") return;
          if (s.kind === "video") {
            b.fps = s.framesPerSecond ?? null;
            b.videoKbps = b.at && b.videoBytes !== null ? ((s.bytesReceived - b.videoBytes) * 8) / (now - b.at) : null;
            b.videoBytes = s.bytesReceived;
          } else if (s.kind === "audio") {
            b.audioKbps = b.at && b.audioBytes !== null ? ((s.bytesReceived - b.audioBytes) * 8) / (now - b.at) : null;
            b.audioBytes = s.bytesReceived;
          }
        });
        b.at = now;
      }
      if (grid.active) update();
    }

    // -- the room ------------------------------------------------------------------------------------
    function participantJoined(peerId) {
      grid.active = true;
      if (!grid.participants.includes(peerId)) grid.participants.push(peerId);
      if (!grid.tiles.has(peerId)) addTile(peerId);
    }

    function peerLeft(peerId, reason) {
      const index = grid.participants.indexOf(peerId);
      if (index >= 0) {
        grid.participants.splice(index, 1);
        hooks.log("info", `participant ${peerId} left the call (${reason || "left"})`);
      }
      removeTile(peerId);
      for (const tile of grid.tiles.values()) {
        if (tile.link && tile.link.peer === peerId) closeLink(tile, `Participant ${peerId}, which relayed this face, left; another one offers it…`);
      }
    }

    /** Whether a relayed offer or candidate belongs to the grid (it names a stream, or comes from a participant). */
    function takes(msg) {
      return (msg.stream !== undefined && msg.stream !== null) || grid.participants.includes(msg.from);
    }

    function update() {
      const root = $("call");
      root.hidden = !grid.active;
      if (!grid.active) return;
      for (const tile of grid.tiles.values()) renderTile(tile);
      const n = grid.participants.length;
      const live = [...grid.tiles.values()].filter(playing).length;
      $("call-count").textContent = n ? `${n} participant${n === 1 ? "" : "s"} · ${live} face${live === 1 ? "" : "s"} playing` : "no participants";
      if (!n) {
        hooks.setBanner("wait", `Call room "${hooks.room()}" has no participants now; their faces appear here when they join (python -m participant --room ${hooks.room()}).`);
      } else if (live < grid.tiles.size) {
        hooks.setBanner("info", `A call of ${n}: connecting to the faces (${live} of ${grid.tiles.size} playing)…`);
      } else {
        hooks.setBanner("", "");
      }
    }

    /** The WebSocket went away: every connection closes (the roster comes again with the next joined). */
    function closeAll() {
      for (const stream of [...grid.tiles.keys()]) removeTile(stream);
      grid.participants = [];
    }

    /** Another room: back to the one-way view until a participant is seen. */
    function reset() {
      closeAll();
      grid.active = false;
      update();
    }

    /** For tests and the curious: each tile's state. */
    function snapshot() {
      return [...grid.tiles.values()].map((tile) => ({
        stream: tile.stream, peer: tile.link ? tile.link.peer : null, playing: playing(tile), videoWidth: tile.video.videoWidth,
        currentTime: tile.video.currentTime, muted: tile.video.muted, paused: tile.video.paused,
        audioTracks: tile.video.srcObject ? tile.video.srcObject.getAudioTracks().length : 0,
        videoTracks: tile.video.srcObject ? tile.video.srcObject.getVideoTracks().length : 0,
        browser: tile.link ? { ...tile.link.browser } : null, stats: tile.link ? tile.link.stats : null,
        status: tile.link && tile.link.status ? tile.link.status.state : null, label: tile.el.querySelector("figcaption").textContent,
      }));
    }

    $("call-sound").addEventListener("click", toggleSound);
    setInterval(() => pollStats().catch((err) => hooks.log("error", `call stats: ${err.message || err}`)), STATS_INTERVAL_MS);
    renderSound();
    return Object.assign(grid, { participantJoined, peerLeft, takes, onOffer, onCandidate, update, closeAll, reset, snapshot });
  }

  window.createCallGrid = createCallGrid;
})();
