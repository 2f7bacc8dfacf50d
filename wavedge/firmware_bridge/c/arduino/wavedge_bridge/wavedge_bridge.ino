// wavedge bridge on an Arduino: receives a classifier's RESULT frames (or PREDICTION frames of
// class scores, with or without their variance) from the host over USB serial, answers HELLO
// and COMMAND, and lights the built-in LED while the predicted class is CLASS_OF_INTEREST.
// It can be the sensor too: set SENSOR_CHANNELS and fill read_sensor(), and the host runs
// `wavedge run MODEL --source link:PORT --sink link:PORT` (one port: samples in, results out).
// Copy wb_frame.h and wb_frame.c next to this sketch (`wavedge firmware --out DIR` does it)
// and build with the Arduino IDE or arduino-cli.
#include "wb_frame.h"

static const uint8_t CLASS_OF_INTEREST = 1;  // e.g. "running" for the bundled model
static const uint32_t BOOT_ID = 0xC0FFEEu;   // use a value that changes per boot if you can

// The sensor side: the model's channel count (6 for the bundled model: acc_x, acc_y, acc_z,
// gyr_x, gyr_y, gyr_z) and sample rate (10 Hz); 0 channels sends nothing.
#ifndef SENSOR_CHANNELS
#define SENSOR_CHANNELS 0
#endif
#ifndef SENSOR_HZ
#define SENSOR_HZ 10
#endif

static wb_decoder_t dec;
static uint16_t seq = 0;
static uint8_t wire[WB_FRAME_WIRE_MAX(WB_MAX_PAYLOAD)];
static bool host_listens = false;  // its HELLO answered: samples may go
static uint32_t next_sample_ms = 0;

static void send_frame(uint8_t type, const uint8_t *payload, size_t len) {
  size_t n = wb_frame_encode(type, 0, seq++, payload, len, wire, sizeof(wire));
  if (n > 0) Serial.write(wire, n);
}

#if SENSOR_CHANNELS > 0
static uint32_t sample_step = 0;

// Replace with your sensor's reading, in the model's channel order and units (the model
// normalises in its graph). Here: the analog pins A0 on, as volts.
static void read_sensor(float *values) {
  for (uint8_t i = 0; i < SENSOR_CHANNELS; i++) values[i] = analogRead(A0 + i) * (5.0f / 1023);
}

static void send_sample() {
  float values[SENSOR_CHANNELS];
  uint8_t out[WB_MAX_PAYLOAD];
  read_sensor(values);
  send_frame(WB_SENSOR, out, wb_sensor_pack(0, sample_step++, SENSOR_CHANNELS, 1, values, out,
                                            sizeof(out)));
}
#endif

void setup() {
  Serial.begin(115200);
  pinMode(LED_BUILTIN, OUTPUT);
  wb_decoder_init(&dec);
}

static void handle(const wb_frame_t *f) {
  uint8_t out[WB_MAX_PAYLOAD];
  if (f->type == WB_HELLO) {
    wb_hello_t mine = {WB_PROTOCOL_VERSION, WB_SCHEMA_HASH, WB_MAX_PAYLOAD, BOOT_ID};
    send_frame(WB_HELLO, out, wb_hello_pack(&mine, out, sizeof(out)));
    host_listens = true;
    next_sample_ms = millis();  // from now: not a burst to catch up the time before
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

void loop() {
  while (Serial.available() > 0) {
    if (wb_decoder_feed(&dec, (uint8_t)Serial.read()) == WB_FRAME_READY) {
      handle(&dec.frame);  // errors are counted in dec.stats
    }
  }
#if SENSOR_CHANNELS > 0
  // on a fixed schedule (no drift); the unsigned difference survives millis() wrapping
  if (host_listens && (int32_t)(millis() - next_sample_ms) >= 0) {
    next_sample_ms += 1000 / SENSOR_HZ;
    send_sample();
  }
#endif
}
