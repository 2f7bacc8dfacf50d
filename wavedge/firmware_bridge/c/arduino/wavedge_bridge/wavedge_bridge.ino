// wavedge bridge on an Arduino: receives a classifier's RESULT frames (or PREDICTION frames of
// class scores, with or without their variance) from the host over USB serial, answers HELLO
// and COMMAND, and lights the built-in LED while the predicted class is CLASS_OF_INTEREST. Copy wb_frame.h and wb_frame.c next to this sketch
// (`wavedge firmware --out DIR` does it) and build with the Arduino IDE or arduino-cli.
#include "wb_frame.h"

static const uint8_t CLASS_OF_INTEREST = 1;  // e.g. "running" for the bundled model
static const uint32_t BOOT_ID = 0xC0FFEEu;   // use a value that changes per boot if you can

static wb_decoder_t dec;
static uint16_t seq = 0;
static uint8_t wire[WB_FRAME_WIRE_MAX(WB_MAX_PAYLOAD)];

static void send_frame(uint8_t type, const uint8_t *payload, size_t len) {
  size_t n = wb_frame_encode(type, 0, seq++, payload, len, wire, sizeof(wire));
  if (n > 0) Serial.write(wire, n);
}

void setup() {
  Serial.begin(115200);
  pinMode(LED_BUILTIN, OUTPUT);
  wb_decoder_init(&dec);
}

void loop() {
  while (Serial.available() > 0) {
    uint8_t status = wb_decoder_feed(&dec, (uint8_t)Serial.read());
    if (status != WB_FRAME_READY) continue;  // errors are counted in dec.stats
    const wb_frame_t *f = &dec.frame;
    uint8_t out[WB_MAX_PAYLOAD];
    if (f->type == WB_HELLO) {
      wb_hello_t mine = {WB_PROTOCOL_VERSION, WB_SCHEMA_HASH, WB_MAX_PAYLOAD, BOOT_ID};
      send_frame(WB_HELLO, out, wb_hello_pack(&mine, out, sizeof(out)));
    } else if (f->type == WB_COMMAND) {
      send_frame(WB_ACK, out, wb_ack_pack(f->seq, 0, out, sizeof(out)));
    } else if (f->type == WB_RESULT) {
      wb_result_t r;
      if (wb_result_unpack(f->payload, f->payload_len, &r)) {
        digitalWrite(LED_BUILTIN, r.class_id == CLASS_OF_INTEREST ? HIGH : LOW);
      }
    } else if (f->type == WB_PREDICTION) {
      // class scores with their variance (kind 7, the spike-and-slab RNN) or without (kind 1):
      // index is the class; values hold the logits (then, for kind 7, their variances)
      wb_prediction_t p;
      if (wb_prediction_unpack(f->payload, f->payload_len, &p) && (p.kind == 1 || p.kind == 7)) {
        digitalWrite(LED_BUILTIN, p.index == CLASS_OF_INTEREST ? HIGH : LOW);
      }
    }
  }
}
